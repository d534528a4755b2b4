//! `imagepipe verify` against what it must not trust or leak: disks that
//! name host files, stores that serve other bytes, two runs of one image,
//! a run killed with SIGKILL, and console output it must bound.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Workspace, qcow2, sh};
use crate::registry_fixture::Registry;
use crate::verify::{CHECKS, catalog, cmd, fixture, nothing_left, registry_tags};

/// The local store's manifest under `tag`, and the layout's path.
fn stored_manifest(ws: &Workspace, tag: &str) -> (PathBuf, Value, Value) {
    let layout = ws.path().join(".imagepipe/store/vm");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let manifest = serde_json::from_slice(&blob(&layout, &entry["digest"])).unwrap();
    (layout, index, manifest)
}

fn blob(layout: &Path, digest: &Value) -> Vec<u8> {
    let hex = digest.as_str().unwrap().trim_start_matches("sha256:");
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> Value {
    let hex = crate::common::sha256_hex(bytes);
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    Value::String(format!("sha256:{hex}"))
}

/// Replaces the disk under `tag` in the local store with `disk`, as a
/// tampered store (or another tool) would: a new uncompressed layer, config
/// and manifest, the tag moved to them. No imagepipe check sees this disk.
fn swap_disk(ws: &Workspace, tag: &str, disk: &[u8]) {
    let (layout, mut index, mut manifest) = stored_manifest(ws, tag);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(disk.len() as u64);
    h.set_mode(0o440);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, "disk/vm.qcow2", disk).unwrap();
    let layer = tar.into_inner().unwrap();
    let layer_digest = put_blob(&layout, &layer);
    let mut config: Value =
        serde_json::from_slice(&blob(&layout, &manifest["config"]["digest"])).unwrap();
    config["rootfs"]["diff_ids"] = serde_json::json!([layer_digest]);
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = put_blob(&layout, &config);
    manifest["config"]["size"] = config.len().into();
    manifest["layers"] = serde_json::json!([{
        "mediaType": "application/vnd.oci.image.layer.v1.tar",
        "digest": layer_digest,
        "size": layer.len(),
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let digest = put_blob(&layout, &manifest);
    for m in index["manifests"].as_array_mut().unwrap() {
        if m["annotations"]["org.opencontainers.image.ref.name"] == tag {
            m["digest"] = digest.clone();
            m["size"] = manifest.len().into();
        }
    }
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

/// Referrers (provenance, verification results) in the local store.
fn recorded(ws: &Workspace) -> usize {
    std::fs::read_to_string(ws.path().join(".imagepipe/store/vm/index.json"))
        .unwrap_or_default()
        .matches("io.imagepipe.subject")
        .count()
}

/// `verify` failed, said `wanted`, and booted nothing.
fn refused_before_boot(ws: &Workspace, out: &crate::common::Output, wanted: &[&str]) {
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    for w in wanted {
        assert!(all.contains(w), "no `{w}` in: {all}");
    }
    let pids = std::fs::read_to_string(ws.path().join("qemu.pids")).unwrap_or_default();
    assert!(pids.trim().is_empty(), "QEMU started: {pids}");
}

/// A workspace whose local store holds a built `vm`, and its immutable tag.
fn built_vm(reg: &Registry) -> (Workspace, String) {
    let ws = Workspace::with_catalog(&catalog(&reg.addr, CHECKS));
    qcow2(&ws, "vm.qcow2", "4M");
    let built = cmd(&ws, "pass", &["build"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let tag = built.stdout.split_whitespace().nth(1).unwrap().to_owned();
    (ws, tag)
}

#[test]
fn verify_refuses_a_stored_disk_that_names_a_host_file() {
    let reg = Registry::start();
    let (ws, tag) = built_vm(&reg);
    let secret = ws.write("host/secret.raw", vec![b's'; 65_536]);
    sh(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            secret.to_str().unwrap(),
            "-F",
            "raw",
            "evil.qcow2",
            "64K",
        ],
        ws.path(),
    );
    swap_disk(
        &ws,
        &tag,
        &std::fs::read(ws.path().join("evil.qcow2")).unwrap(),
    );
    let before = recorded(&ws);
    let out = cmd(&ws, "pass", &["verify"]);
    refused_before_boot(
        &ws,
        &out,
        &[
            "refers outside itself",
            "backing_file",
            secret.to_str().unwrap(),
        ],
    );
    assert_eq!(recorded(&ws), before, "a result was recorded");
}

#[test]
fn verify_boots_nothing_a_store_serves_under_another_digest() {
    let reg = Registry::start();
    let (ws, tag) = built_vm(&reg);
    let (layout, _, manifest) = stored_manifest(&ws, &tag);
    let layer = manifest["layers"][0]["digest"].clone();
    let layer_hex = layer
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let genuine = blob(&layout, &layer);
    // Another image's layer, of another disk.
    let other = Workspace::with_catalog(&catalog(&reg.addr, CHECKS));
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "vm.qcow2", "8M"],
        other.path(),
    );
    let other_built = cmd(&other, "pass", &["build"]);
    assert_eq!(other_built.code, 0, "{}", other_built.stderr);
    let other_tag = other_built.stdout.split_whitespace().nth(1).unwrap();
    let (other_layout, _, other_manifest) = stored_manifest(&other, other_tag);
    let forged = blob(&other_layout, &other_manifest["layers"][0]["digest"]);
    assert_ne!(forged, genuine);

    // From a registry that serves the other layer under this layer's digest.
    assert_eq!(cmd(&ws, "pass", &["publish"]).code, 0);
    let proxy = crate::fault_proxy::FaultProxy::start(
        &reg.addr,
        vec![crate::fault_proxy::Fault::Respond {
            method: "GET",
            path: Box::leak(format!("/blobs/sha256:{layer_hex}").into_boxed_str()),
            status: 200,
            headers: String::new(),
            body: forged.clone(),
            times: 100,
            authorized: false,
        }],
    );
    let proxied = Workspace::with_catalog(&catalog(&proxy.addr, CHECKS));
    std::fs::copy(ws.path().join("vm.qcow2"), proxied.path().join("vm.qcow2")).unwrap();
    let tags = registry_tags(&reg);
    let out = cmd(&proxied, "pass", &["verify", "--from", "ci"]);
    refused_before_boot(&proxied, &out, &[layer.as_str().unwrap(), "other bytes"]);
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert_eq!(registry_tags(&reg), tags, "a result was recorded");

    // From the local store, whose blob file holds the other layer.
    let path = layout.join("blobs/sha256").join(&layer_hex);
    std::fs::write(&path, &forged).unwrap();
    let before = recorded(&ws);
    let out = cmd(&ws, "pass", &["verify"]);
    refused_before_boot(&ws, &out, &[layer.as_str().unwrap(), "other bytes"]);
    // Same length, one byte changed: the digest, not the size, says so.
    let mut flipped = genuine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    std::fs::write(&path, &flipped).unwrap();
    let out = cmd(&ws, "pass", &["verify"]);
    refused_before_boot(&ws, &out, &[layer.as_str().unwrap()]);
    assert_eq!(recorded(&ws), before, "a result was recorded");
}

#[test]
fn two_verify_runs_of_one_image_each_read_their_own_console() {
    let reg = Registry::start();
    let (ws, _) = built_vm(&reg);
    let start = |mode: &str| {
        ws.process()
            .args(["verify", "--format", "json"])
            .env("IMAGEPIPE_QEMU", fixture("fake-qemu.sh"))
            .env("FAKE_QEMU_MODE", mode)
            .env("FAKE_QEMU_PIDS", ws.path().join("qemu.pids"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // One guest panics at once, the other reports and passes.
    let (panics, passes) = (start("panic"), start("pass"));
    let (panics, passes) = (
        panics.wait_with_output().unwrap(),
        passes.wait_with_output().unwrap(),
    );
    let result = |o: &std::process::Output| -> Value {
        serde_json::from_slice::<Value>(&o.stdout).unwrap()["items"][0].clone()
    };
    assert_eq!(passes.status.code(), Some(0), "{}", result(&passes));
    assert_eq!(result(&passes)["passed"], true);
    assert_eq!(panics.status.code(), Some(1));
    assert!(
        result(&panics)["error"]
            .as_str()
            .unwrap()
            .contains("panicked"),
        "{}",
        result(&panics)
    );
    nothing_left(&ws);
}

#[test]
fn killing_verify_with_sigkill_takes_qemu_with_it_and_the_next_run_sweeps_its_scratch() {
    let reg = Registry::start();
    let (ws, _) = built_vm(&reg);
    let mut child = ws
        .process()
        .args(["verify"])
        .env("IMAGEPIPE_QEMU", fixture("fake-qemu.sh"))
        .env("FAKE_QEMU_MODE", "hang")
        .env("FAKE_QEMU_PIDS", ws.path().join("qemu.pids"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pids = ws.path().join("qemu.pids");
    let started = std::time::Instant::now();
    let qemu = loop {
        if let Ok(p) = std::fs::read_to_string(&pids)
            && !p.trim().is_empty()
        {
            break p.trim().to_owned();
        }
        assert!(started.elapsed().as_secs() < 30, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL: no handler of imagepipe runs.
    child.wait().unwrap();
    let gone = |pid: &str| {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    };
    let killed = std::time::Instant::now();
    while !gone(&qemu) {
        assert!(
            killed.elapsed().as_secs() < 10,
            "QEMU {qemu} outlived its imagepipe"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The killed run's scratch directory (a disk copy) is still there …
    let work = ws.path().join(".imagepipe/work");
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 1);
    // … until the next run.
    std::fs::remove_file(&pids).unwrap();
    let out = cmd(&ws, "pass", &["verify"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    nothing_left(&ws);
}

#[test]
fn a_multi_line_check_is_one_table_line() {
    let reg = Registry::start();
    let checks = "      required: true\n      timeout: 2s\n      checks:\n        - run: |\n            echo first\n            echo second\n";
    let ws = Workspace::with_catalog(&catalog(&reg.addr, checks));
    qcow2(&ws, "vm.qcow2", "4M");
    assert_eq!(cmd(&ws, "pass", &["build"]).code, 0);
    let out = cmd(&ws, "pass", &["verify"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let checks: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(checks, ["  ok   echo first … (+1 line)"], "{}", out.stdout);
}

//! `publish` executes the plan: nothing is rebuilt that a store holds, a
//! fresh runner copies from the target that has the image, blobs are
//! mounted across repositories of one registry, and mutable tags only move
//! forward. Against the real Distribution registry, read back with skopeo.

use serde_json::Value;

use crate::common::{Workspace, git, qcow2, run, sh};
use crate::registry_fixture::Registry;

fn publish(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(["publish", "--format", "json"]).args(args);
    run(c)
}

fn items(out: &crate::common::Output) -> Vec<Value> {
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str::<Value>(&out.stdout).unwrap()["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// `sha256:<hex>` of what `docker://addr/repo:tag` names, if it exists.
fn remote(addr: &str, repo: &str, tag: &str) -> Option<String> {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{addr}/{repo}:{tag}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| format!("sha256:{}", imagepipe::recipe::sha256_hex(&out.stdout)))
}

fn disk_catalog(targets: &str) -> String {
    format!(
        "version: 1\ntargets:\n{targets}images:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n"
    )
}

/// A git repository holding the catalog and its disk, as CI checks it out.
fn repo_with(text: &str) -> Workspace {
    let ws = Workspace::with_catalog(text);
    qcow2(&ws, "disk.qcow2", "8M");
    ws.write(".gitignore", ".imagepipe/\n");
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "."]);
    git(ws.path(), &["commit", "-qm", "catalog"]);
    ws
}

/// A fresh runner: no local store, a new commit that does not touch the
/// image. `plan` says skip, and `publish` does nothing — no rebuild, no
/// error — with or without a `layout` target in the catalog, which is
/// filled by copying from the registry.
#[test]
fn a_fresh_runner_publishes_an_unchanged_image_without_rebuilding() {
    let reg = Registry::start();
    // `local` is the build store (a cache); `mirror` a layout target proper.
    let ws = repo_with(&disk_catalog(&format!(
        "  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: r1, registry: {}, namespace: ci, insecure: true }}\n  - {{ name: mirror, layout: ./.imagepipe/mirror }}\n",
        reg.addr
    )));
    let first = items(&publish(&ws, &[]));
    let digest = first[0]["digest"].as_str().unwrap().to_owned();
    let tag = first[0]["tag"].as_str().unwrap().to_owned();
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    git(
        ws.path(),
        &["commit", "-q", "--allow-empty", "-m", "unrelated"],
    );
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"]);
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let by_target = |t: &str| {
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["target"] == t)
            .unwrap()
            .clone()
    };
    assert_eq!(by_target("r1")["action"], "skip", "{plan}");
    assert_eq!(by_target("local")["action"], "skip", "{plan}");
    assert_eq!(by_target("local")["reason_code"], "local-cache", "{plan}");
    assert_eq!(by_target("mirror")["action"], "copy", "{plan}");
    assert_eq!(by_target("mirror")["source"], "r1");
    // The final tags job of a fan-out, on this runner: nothing to fail on.
    let tags_only = publish(&ws, &["--tags-only"]);
    assert_eq!(tags_only.code, 1, "mirror lacks it: {}", tags_only.stderr);
    assert!(
        tags_only.stderr.contains("missing on mirror"),
        "{}",
        tags_only.stderr
    );
    let out = publish(&ws, &[]);
    assert!(
        !out.stderr.contains("building"),
        "nothing is rebuilt: {}",
        out.stderr
    );
    let again = items(&out);
    for i in again.iter().filter(|i| i["target"] != "local") {
        assert_eq!(i["digest"], Value::from(digest.clone()), "{i}");
    }
    let mirror = again.iter().find(|i| i["target"] == "mirror").unwrap();
    assert_eq!(mirror["outcome"], "pushed");
    assert_eq!(mirror["from"], "r1");
    assert!(
        !ws.path().join(".imagepipe/store/disk").exists(),
        "the local cache is not filled from a registry"
    );
    assert_eq!(items(&publish(&ws, &["--tags-only"])).len(), 3);
    // The registry-to-layout copy is a complete image that skopeo reads,
    // `latest` included.
    let layout = ws.path().join(".imagepipe/mirror/disk");
    for t in [tag.as_str(), "latest"] {
        let raw = sh(
            "skopeo",
            &["inspect", "--raw", &format!("oci:{}:{t}", layout.display())],
            ws.path(),
        );
        assert_eq!(
            format!("sha256:{}", imagepipe::recipe::sha256_hex(raw.as_bytes())),
            digest
        );
    }
    sh(
        "skopeo",
        &[
            "copy",
            &format!("oci:{}:{tag}", layout.display()),
            &format!("dir:{}", ws.path().join("pulled").display()),
        ],
        ws.path(),
    );
}

/// A target added later is filled from the target that has the image
/// (registry to registry, not rebuilt); on the same registry its blobs are
/// mounted, as Distribution's own access log shows.
#[test]
fn a_new_target_is_copied_from_another_and_mounted_on_the_same_registry() {
    let reg = Registry::start();
    let other = Registry::start();
    let ws = repo_with(&disk_catalog(&format!(
        "  - {{ name: old, registry: {}, namespace: one, insecure: true }}\n",
        reg.addr
    )));
    let digest = items(&publish(&ws, &[]))[0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    // Two new targets, listed before the old one: another namespace of the
    // same registry and another registry.
    ws.write(
        "images.yml",
        disk_catalog(&format!(
            "  - {{ name: new, registry: {r}, namespace: two, insecure: true }}\n  - {{ name: far, registry: {o}, namespace: x, insecure: true }}\n  - {{ name: old, registry: {r}, namespace: one, insecure: true }}\n",
            r = reg.addr,
            o = other.addr
        )),
    );
    let before = reg.access_log().lines().count();
    let out = publish(&ws, &[]);
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    let done = items(&out);
    for i in &done {
        assert_eq!(i["digest"], Value::from(digest.clone()), "{i}");
    }
    let new = done.iter().find(|i| i["target"] == "new").unwrap();
    assert_eq!(new["from"], "old");
    assert_eq!(new["copied"]["uploaded"], 0, "{new}");
    assert!(new["copied"]["mounted"].as_u64().unwrap() >= 2, "{new}");
    let far = done.iter().find(|i| i["target"] == "far").unwrap();
    assert!(far["copied"]["uploaded"].as_u64().unwrap() >= 2, "{far}");
    let log: Vec<String> = reg
        .access_log()
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    assert!(
        log.iter().any(
            |l| l.contains("POST /v2/two/disk/blobs/uploads/?mount=") && l.contains("from=one")
        ),
        "no mount in the registry's access log: {log:#?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.contains("PUT /v2/two/disk/blobs/uploads/")),
        "a blob was uploaded again: {log:#?}"
    );
    for (addr, repo) in [(&reg.addr, "two/disk"), (&other.addr, "x/disk")] {
        assert_eq!(
            remote(addr, repo, "latest").as_deref(),
            Some(digest.as_str())
        );
    }
}

fn release_catalog(addr: &str) -> String {
    format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: {addr}, namespace: k8s, insecure: true }}\nimages:\n  - name: node\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    kubernetes: true\n    source: {{ command: {{ run: [./make.sh] }} }}\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\", \"{{kubernetes_series}}-latest\", latest, \"{{kubernetes_series}}-next\"]\n    prerelease_tags: [\"{{kubernetes_series}}-next\"]\n"
    )
}

/// Mutable tags move only forward: an older release never takes a series
/// tag or `latest` back, a release candidate moves only the tags that opt
/// in, and a rerun with nothing to do writes nothing.
#[test]
fn mutable_tags_only_move_forward() {
    let reg = Registry::start();
    let proxy = crate::fault_proxy::FaultProxy::start(&reg.addr, Vec::new());
    let ws = Workspace::with_catalog(&release_catalog(&proxy.addr));
    // A disk whose bytes name the release, so each release is another image.
    let script = ws.write(
        "make.sh",
        "#!/bin/sh\nqemu-img create -q -f qcow2 \"$IMAGEPIPE_OUTPUT_DIR/disk.qcow2\" 4M\nprintf '%s' \"$KUBERNETES_SEMVER\" >> \"$IMAGEPIPE_OUTPUT_DIR/disk.qcow2\"\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let at = |tag: &str| remote(&reg.addr, "k8s/node", tag);
    let release = |r: &str| items(&publish(&ws, &["--release", r]))[0].clone();
    let v7 = release("v1.33.7");
    let d7 = v7["digest"].as_str().unwrap().to_owned();
    assert_eq!(at("v1.33-latest").as_deref(), Some(d7.as_str()));
    // An older patch release is published, but takes no mutable tag back.
    let v6 = release("v1.33.6/runc-1.2.6");
    assert_ne!(v6["digest"], Value::from(d7.clone()));
    assert_eq!(at("v1.33-latest").as_deref(), Some(d7.as_str()));
    assert_eq!(at("latest").as_deref(), Some(d7.as_str()));
    assert_eq!(v6["moved"].as_array().unwrap().len(), 0, "{v6}");
    assert!(
        v6["held"][0]
            .as_str()
            .unwrap()
            .contains("newer than v1.33.6"),
        "{v6}"
    );
    // A release candidate of the next minor: only the opted-in `-next` tag.
    let rc = release("v1.34.0-rc.1");
    assert!(
        at("v1.34-latest").is_none(),
        "an rc does not take a release tag"
    );
    assert_eq!(at("latest").as_deref(), Some(d7.as_str()));
    assert_eq!(at("v1.34-next"), rc["digest"].as_str().map(str::to_owned));
    // The release itself moves them all forward.
    let v340 = release("v1.34.0");
    let d340 = v340["digest"].as_str().unwrap().to_owned();
    for t in ["v1.34-latest", "latest", "v1.34-next"] {
        assert_eq!(at(t).as_deref(), Some(d340.as_str()), "{t}");
    }
    // A rerun with nothing to do: HEADs only, nothing moved or written.
    proxy.log.lock().unwrap().clear();
    let again = release("v1.34.0");
    assert_eq!(again["outcome"], "present");
    assert_eq!(again["moved"].as_array().unwrap().len(), 0, "{again}");
    let log = proxy.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.starts_with("HEAD ")), "{log:#?}");
}

/// A tags job that failed is repaired by the next run: the plan shows `tag`
/// and publish moves the missing tag without copying anything.
#[test]
fn a_missing_mutable_tag_is_repaired_by_the_next_run() {
    let reg = Registry::start();
    let ws = repo_with(&disk_catalog(&format!(
        "  - {{ name: a, registry: {r}, namespace: a, insecure: true }}\n  - {{ name: b, registry: {r}, namespace: b, insecure: true }}\n",
        r = reg.addr
    )));
    // Fan-out jobs pushed the immutable tag; the tags job never ran.
    for t in ["a", "b"] {
        items(&publish(&ws, &["--target", t, "--immutable-only"]));
    }
    assert!(remote(&reg.addr, "a/disk", "latest").is_none());
    let mut c = ws.cmd();
    c.args(["publish", "--dry-run", "--format", "json"]);
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert_eq!(plan["items"][0]["action"], "tag", "{plan}");
    assert!(
        remote(&reg.addr, "a/disk", "latest").is_none(),
        "a dry run changes nothing"
    );
    let done = items(&publish(&ws, &[]));
    for i in &done {
        assert_eq!(i["moved"], serde_json::json!(["latest"]), "{i}");
        assert!(i["copied"].is_null(), "{i}");
    }
    assert!(remote(&reg.addr, "b/disk", "latest").is_some());
}

/// A fan-out job for one target, on a runner without the build artifact,
/// copies from the target that already has the image: it never rebuilds.
/// And targets that disagree on what the immutable tag names stop the image.
#[test]
fn a_narrowed_job_copies_from_any_target_and_targets_must_agree() {
    let reg = Registry::start();
    let ws = repo_with(&disk_catalog(&format!(
        "  - {{ name: a, registry: {r}, namespace: a, insecure: true }}\n  - {{ name: b, registry: {r}, namespace: b, insecure: true }}\n",
        r = reg.addr
    )));
    let first = items(&publish(&ws, &["--target", "a", "--immutable-only"]));
    let (tag, digest) = (
        first[0]["tag"].as_str().unwrap().to_owned(),
        first[0]["digest"].as_str().unwrap().to_owned(),
    );
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    let out = publish(&ws, &["--target", "b", "--immutable-only"]);
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    let b = items(&out);
    assert_eq!(b[0]["from"], "a");
    assert_eq!(b[0]["digest"], Value::from(digest.clone()));
    // Someone overwrites b's immutable tag with other bytes.
    let other = Workspace::with_catalog(&disk_catalog(
        "  - { name: local, layout: ./.imagepipe/store }\n",
    ));
    qcow2(&other, "disk.qcow2", "5M");
    let mut c = other.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
    let layout = other.path().join(".imagepipe/store/disk");
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{}/b/disk:{tag}", reg.addr),
        ],
        other.path(),
    );
    // The plan says so, before anything runs: a conflict, with its code.
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"]);
    let planned = run(c);
    assert_eq!(planned.code, 0, "{}", planned.stderr);
    assert!(planned.stderr.contains("disagree"), "{}", planned.stderr);
    let plan: Value = serde_json::from_str(&planned.stdout).unwrap();
    for i in plan["items"].as_array().unwrap() {
        assert_eq!(i["action"], "conflict", "{i}");
        assert_eq!(i["reason_code"], "targets-disagree", "{i}");
        assert!(
            i["tags"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["action"] == "hold"),
            "{i}"
        );
    }
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("disagree"), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    for i in v["items"].as_array().unwrap() {
        assert_eq!(i["error_code"], "targets-disagree", "{i}");
    }
    assert!(
        remote(&reg.addr, "a/disk", "latest").is_none(),
        "no tag moved"
    );
}

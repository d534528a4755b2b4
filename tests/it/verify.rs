//! `imagepipe verify`: boots, checks, the recorded result, and the gate it
//! puts on mutable tags. The fast tests run a stand-in for QEMU that plays
//! the guest from the real NoCloud seed (tests/fixtures/fake-qemu.sh); the
//! slow test boots a real Debian disk under TCG.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Workspace, qcow2, run, sh};
use crate::registry_fixture::Registry;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn catalog(registry: &str, verify: &str) -> String {
    format!(
        "version: 1\nvariables:\n  runc: \"1.2.6\"\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: ci, registry: \"{registry}\", namespace: ci, insecure: true }}\nimages:\n  - name: vm\n    os: {{ distro: debian, version: \"12\" }}\n    source: {{ file: vm.qcow2 }}\n    format: containerdisk\n    verify:\n{verify}"
    )
}

pub const CHECKS: &str = "      required: true\n      timeout: 2s\n      checks:\n        - run: echo runc version 1.2.6\n          expect: \"{runc}\"\n        - run: echo kernel $(echo ok)\n";

/// imagepipe with the stand-in QEMU in `mode`; its pids go to `pids`.
pub fn cmd(ws: &Workspace, mode: &str, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(args)
        .env("IMAGEPIPE_QEMU", fixture("fake-qemu.sh"))
        .env("FAKE_QEMU_MODE", mode)
        .env("FAKE_QEMU_PIDS", ws.path().join("qemu.pids"));
    run(c)
}

fn plan_json(ws: &Workspace) -> Value {
    let out = cmd(ws, "pass", &["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

fn item<'a>(plan: &'a Value, target: &str) -> &'a Value {
    plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == target)
        .unwrap()
}

pub fn registry_tags(reg: &Registry) -> Vec<String> {
    crate::common::image_tags(&reg.addr, "ci/vm")
}

/// Every stand-in QEMU started is gone, and no scratch directory is left.
pub fn nothing_left(ws: &Workspace) {
    let pids = std::fs::read_to_string(ws.path().join("qemu.pids")).unwrap_or_default();
    assert!(!pids.trim().is_empty(), "QEMU never started");
    for pid in pids.lines() {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "QEMU {pid} is still running"
        );
    }
    let work = ws.path().join(".imagepipe/work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", work.display());
}

#[test]
fn mutable_tags_move_only_after_verify_passes() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, CHECKS));
    qcow2(&ws, "vm.qcow2", "4M");
    // The GitLab child pipeline boots the image in its build job.
    let out = cmd(&ws, "pass", &["plan", "--format", "gitlab"]);
    assert!(
        out.stdout.contains("    - \"imagepipe build -c images.yml --only vm\"\n    - \"imagepipe verify -c images.yml --only vm\"\n"),
        "{}",
        out.stdout
    );
    // Built and published: the immutable tag goes out, `latest` waits.
    assert_eq!(cmd(&ws, "pass", &["build"]).code, 0);
    let plan = plan_json(&ws);
    let ci = item(&plan, "ci");
    assert_eq!(ci["action"], "copy");
    assert_eq!(ci["tags"][0]["action"], "hold", "{ci}");
    assert!(
        ci["tags"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("imagepipe verify"),
        "{ci}"
    );
    let out = cmd(&ws, "pass", &["publish"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tags = registry_tags(&reg);
    assert_eq!(tags.len(), 1, "only the immutable tag: {tags:?}");
    // The plan says what it waits for.
    let plan = plan_json(&ws);
    assert_eq!(item(&plan, "ci")["action"], "verify");
    assert_eq!(item(&plan, "ci")["reason_code"], "not-verified");
    let out = cmd(&ws, "pass", &["plan"]);
    assert!(
        out.stdout.contains("verify") && out.stderr.contains("2 waiting for verification"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    // A fresh runner (no local store) verifies what the registry holds.
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    let out = cmd(&ws, "pass", &["verify", "--from", "ci", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let o = &v["items"][0];
    assert_eq!(o["passed"], true, "{o}");
    assert_eq!(o["checks"][0]["expect"], "1.2.6");
    assert_eq!(o["checks"][0]["output"], "runc version 1.2.6");
    assert_eq!(o["checks"][1]["output"], "kernel ok");
    assert_eq!(
        o["digest"],
        Value::String(item(&plan, "ci")["digest"].as_str().unwrap().to_owned())
    );
    nothing_left(&ws);
    // The serial console is kept.
    let log = std::fs::read_to_string(o["serial_log"].as_str().unwrap()).unwrap();
    assert!(log.contains("IMAGEPIPE-VERIFY:"), "{log}");

    // The result is an attestation on the registry: the tags job moves `latest`.
    assert_eq!(item(&plan_json(&ws), "ci")["tags"][0]["action"], "move");
    let out = cmd(&ws, "pass", &["publish", "--tags-only", "--target", "ci"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(registry_tags(&reg).contains(&"latest".to_owned()));
    // skopeo reads the attestation by the referrers tag.
    let digest = o["digest"].as_str().unwrap().replace(':', "-");
    let index = sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/ci/vm:{digest}", reg.addr),
        ],
        ws.path(),
    );
    assert!(
        index.contains("https://imagepipe.dev/verification/v1") && index.contains("\"passed\""),
        "{index}"
    );
    // A forced rebuild is a digest nobody verified: its tags wait.
    let out = cmd(
        &ws,
        "pass",
        &["publish", "--force", "--dry-run", "--format", "json"],
    );
    assert!(
        out.stdout
            .contains("rebuilt by --force: mutable tags wait for `imagepipe verify`"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("\"action\": \"move\""),
        "{}",
        out.stdout
    );
    // release-notes-style readers see it too: a second verify is not needed.
    let out = cmd(&ws, "pass", &["plan"]);
    assert!(
        !out.stderr.contains("waiting for verification"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failed_check_fails_verify_and_holds_the_tags() {
    let reg = Registry::start();
    let checks = CHECKS.replace("expect: \"{runc}\"", "expect: \"{runc}-rc\"");
    let ws = Workspace::with_catalog(&catalog(&reg.addr, &checks));
    qcow2(&ws, "vm.qcow2", "4M");
    assert_eq!(cmd(&ws, "pass", &["build"]).code, 0);
    let out = cmd(&ws, "pass", &["verify"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("FAIL echo runc version 1.2.6 (output lacks `1.2.6-rc`: runc version 1.2.6)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ok   echo kernel $(echo ok)"),
        "{}",
        out.stdout
    );
    nothing_left(&ws);
    // Published, its failure travels with it, and `latest` is held.
    let out = cmd(&ws, "pass", &["publish"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!registry_tags(&reg).contains(&"latest".to_owned()));
    let plan = plan_json(&ws);
    assert!(
        item(&plan, "ci")["tags"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("failed `imagepipe verify`"),
        "{plan}"
    );
}

#[test]
fn a_guest_that_never_finishes_panics_or_dies_fails_with_qemu_killed() {
    let ws = Workspace::with_catalog(&catalog("127.0.0.1:9", CHECKS));
    qcow2(&ws, "vm.qcow2", "4M");
    assert_eq!(cmd(&ws, "pass", &["build"]).code, 0);
    for (mode, message) in [
        ("hang", "did not finish cloud-init within 10s"),
        ("panic", "the guest kernel panicked"),
        ("exit", "QEMU exited before the guest finished cloud-init"),
    ] {
        let out = cmd(&ws, mode, &["verify", "--accel", "tcg"]);
        assert_eq!(out.code, 1, "{mode}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{mode}: {}", out.stderr);
        assert!(
            out.stderr.contains("serial console:"),
            "{mode}: {}",
            out.stderr
        );
        nothing_left(&ws);
    }
    // The console's last lines are shown.
    let out = cmd(&ws, "panic", &["verify", "--accel", "tcg"]);
    assert!(
        out.stderr.contains("| [    1.000000] Kernel panic"),
        "{}",
        out.stderr
    );
    // KVM that does not work falls back to TCG.
    let out = cmd(&ws, "kvm-broken", &["verify", "--accel", "kvm"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("KVM does not work here"),
        "{}",
        out.stderr
    );
    // No QEMU at all: an error, and nothing recorded about the image.
    let index = ws.path().join(".imagepipe/store/vm/index.json");
    let recorded = || {
        std::fs::read_to_string(&index)
            .unwrap()
            .matches("verification/v1")
            .count()
    };
    let before = recorded();
    let mut c = ws.cmd();
    c.args(["verify"])
        .env("IMAGEPIPE_QEMU", "/nonexistent/qemu-system-x86_64");
    let out = run(c);
    assert_eq!(out.code, 1);
    assert_eq!(
        recorded(),
        before,
        "a run that booted nothing records nothing"
    );
    assert!(
        out.stderr.contains("not found: install QEMU"),
        "{}",
        out.stderr
    );
    // UEFI without its firmware.
    ws.write(
        "images.yml",
        catalog(
            "127.0.0.1:9",
            &CHECKS.replace(
                "      timeout: 2s\n",
                "      timeout: 2s\n      firmware: uefi\n",
            ),
        ),
    );
    let mut c = ws.cmd();
    c.args(["verify"])
        .env("IMAGEPIPE_QEMU", fixture("fake-qemu.sh"))
        .env("IMAGEPIPE_OVMF", "/nonexistent/OVMF_CODE.fd");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("/nonexistent/OVMF_CODE.fd (IMAGEPIPE_OVMF) does not exist: install OVMF"),
        "{}",
        out.stderr
    );
    // Nothing built: say so.
    let empty = Workspace::with_catalog(&catalog("127.0.0.1:9", CHECKS));
    qcow2(&empty, "vm.qcow2", "4M");
    let out = cmd(&empty, "pass", &["verify"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("run `imagepipe build` first"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_real_debian_disk_boots_under_tcg_and_a_broken_one_does_not() {
    if !crate::common::slow_tests_enabled() {
        eprintln!(
            "skipped: set IMAGEPIPE_SLOW_TESTS=1 (builds and boots a Debian disk, about four minutes)"
        );
        return;
    }
    if sh("id", &["-u"], Path::new("/")).trim() != "0" {
        eprintln!("skipped: mmdebstrap --mode=root needs root");
        return;
    }
    let ws = Workspace::new();
    std::fs::copy(
        fixture("make-bootable-disk.sh"),
        ws.path().join("make-bootable-disk.sh"),
    )
    .unwrap();
    ws.write(
        "images.yml",
        "version: 1\nimages:\n  - name: debian\n    os: { distro: debian, version: \"12\" }\n    source:\n      command:\n        run: [./make-bootable-disk.sh]\n    format: containerdisk\n    verify:\n      required: true\n      timeout: 1m\n      checks:\n        - run: uname -r\n          expect: cloud-amd64\n        - run: cat /etc/os-release\n          expect: bookworm\n  - name: debian-bad-check\n    os: { distro: debian, version: \"12\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    verify:\n      timeout: 1m\n      checks:\n        - run: cat /etc/os-release\n          expect: trixie\n  - name: debian-no-boot\n    os: { distro: debian, version: \"12\" }\n    source: { file: broken.qcow2 }\n    format: containerdisk\n    verify:\n      timeout: 12s\n",
    );
    // The good disk, built by imagepipe through the command source.
    let started = std::time::Instant::now();
    let mut c = ws.cmd();
    c.args(["build", "--only", "debian"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    eprintln!(
        "bootable disk built in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    // The same disk for the failing check, and one whose boot code is zeroed.
    let tag = out.stdout.split(' ').nth(1).unwrap().to_owned();
    let layout = ws.path().join(".imagepipe/store/debian");
    let bundle = crate::common::umoci_unpack(&layout, &tag, ws.path());
    let disk = bundle.join("rootfs/disk/disk.qcow2");
    std::fs::copy(&disk, ws.path().join("disk.qcow2")).unwrap();
    std::fs::copy(&disk, ws.path().join("broken.qcow2")).unwrap();
    // A zeroed boot sector: the firmware finds nothing to boot.
    sh(
        "qemu-io",
        &["-c", "write -z 0 512", "broken.qcow2"],
        ws.path(),
    );
    let mut c = ws.cmd();
    c.args([
        "build",
        "--only",
        "debian-bad-check",
        "--only",
        "debian-no-boot",
    ]);
    assert_eq!(run(c).code, 0);

    let started = std::time::Instant::now();
    let mut c = ws.cmd();
    c.args(["verify", "--accel", "tcg", "--format", "json"]);
    let out = run(c);
    eprintln!(
        "three TCG verifications in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let by = |n: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["image"] == n)
            .unwrap()
            .clone()
    };
    let good = by("debian");
    assert_eq!(good["passed"], true, "{good}\n{}", out.stderr);
    eprintln!("the good disk verified in {}s under TCG", good["seconds"]);
    let bad = by("debian-bad-check");
    assert_eq!(bad["passed"], false);
    assert_eq!(bad["checks"][0]["exit"], 0);
    assert!(
        bad["checks"][0]["output"]
            .as_str()
            .unwrap()
            .contains("bookworm"),
        "{bad}"
    );
    let dead = by("debian-no-boot");
    assert_eq!(dead["passed"], false);
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains("the firmware found nothing to boot (Boot failed: not a bootable disk"),
        "{dead}"
    );
    // Known from the firmware, not from the timeout (12s × 5 under TCG).
    assert!(dead["seconds"].as_f64().unwrap() < 60.0, "{dead}");
    let left = std::process::Command::new("pgrep")
        .args(["-f", &ws.path().display().to_string()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "stray processes: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

#[test]
fn release_notes_say_which_references_booted() {
    let reg = Registry::start();
    let text = catalog(&reg.addr, CHECKS).replace(
        "    format: containerdisk\n",
        "    format: containerdisk\n    kubernetes: true\n    tags: [\"{name}-{kubernetes}-{hash}\"]\n",
    );
    let ws = Workspace::with_catalog(&text);
    qcow2(&ws, "vm.qcow2", "4M");
    let release = ["--release", "v1.33.6"];
    for args in [&["build"][..], &["verify"], &["publish"]] {
        let out = cmd(&ws, "pass", &[args, &release[..]].concat());
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
    }
    let out = cmd(&ws, "pass", &["release-notes", "--release", "v1.33.6"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ci = out
        .stdout
        .lines()
        .find(|l| l.starts_with("| ci |"))
        .unwrap();
    assert!(ci.ends_with(" — boot verified |"), "{}", out.stdout);
    let out = cmd(
        &ws,
        "pass",
        &["release-notes", "--release", "v1.33.6", "--format", "json"],
    );
    assert!(
        out.stdout.contains("\"verification\": \"passed\""),
        "{}",
        out.stdout
    );
}

//! The loop from upstream to the consumer: `update` locks what upstream
//! serves, `plan`/`build` read the lock offline, `pin` writes the immutable
//! references a consumer's CI reads, and cleanup keeps what each branch pins.

use serde_json::Value;

use crate::common::{FileServer, Workspace, git, run, sha256_hex};
use crate::registry_fixture::Registry;

fn update(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.arg("update").args(args);
    run(c)
}

fn lock(ws: &Workspace) -> Value {
    serde_json::from_str(&std::fs::read_to_string(ws.path().join("images.lock")).unwrap()).unwrap()
}

fn plan_tag(ws: &Workspace, offline: bool) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"]);
    if offline {
        c.arg("--offline");
    }
    run(c)
}

/// An upstream serving a 4 KiB disk at `/a/disk.img`.
fn upstream_disk() -> (FileServer, Vec<u8>, String) {
    let upstream = FileServer::start();
    let disk = vec![1u8; 4096];
    let url = upstream.put("/a/disk.img", disk.clone());
    (upstream, disk, url)
}

#[test]
fn update_locks_upstream_and_check_says_when_it_moved() {
    let upstream = FileServer::start();
    let disk_v1 = vec![1u8; 64 << 10];
    let url = upstream.put(
        "/noble/current/noble-server-cloudimg-amd64.img",
        disk_v1.clone(),
    );
    let pinned_url = upstream.put("/debian/20250806/debian-13.raw", vec![2u8; 4096]);
    let sums = |disk: &[u8]| format!("{}  noble-server-cloudimg-amd64.img\n", sha256_hex(disk));
    let sums_url = upstream.put("/noble/current/SHA256SUMS", sums(&disk_v1));
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: vm-ubuntu-2404\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ url: \"{url}\", checksums_url: \"{sums_url}\" }}\n    format: containerdisk\n  - name: vm-debian-13\n    os: {{ distro: debian, version: \"13\" }}\n    source: {{ url: \"{pinned_url}\", sha256: \"{}\" }}\n    format: containerdisk\n",
        sha256_hex(&[2u8; 4096])
    ));
    // No lock yet: --check says the lock lacks the sources.
    assert_eq!(update(&ws, &["--check"]).code, 1);
    assert!(
        !ws.path().join("images.lock").exists(),
        "--check writes nothing"
    );
    let out = update(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("is a moving pointer"), "{}", out.stderr);
    let l = lock(&ws);
    let entry = &l["sources"][&url];
    assert_eq!(entry["digest"], sha256_hex(&disk_v1));
    assert_eq!(entry["checksums_url"], sums_url.as_str());
    assert_eq!(entry["size"], 64 << 10);
    assert_eq!(entry["moving_pointer"], true);
    assert!(l["sources"][&pinned_url]["moving_pointer"].is_null());
    let resolved_at = entry["resolved_at"].clone();
    assert_eq!(update(&ws, &["--check"]).code, 0, "nothing moved");
    // Plan reads the lock, offline: the checksum file may be gone.
    let before = plan_tag(&ws, true);
    assert_eq!(before.code, 0, "{}", before.stderr);
    let tag_of = |o: &crate::common::Output| -> String {
        let v: Value = serde_json::from_str(&o.stdout).unwrap();
        v["items"][0]["tag"].as_str().unwrap().to_owned()
    };
    let tag_v1 = tag_of(&before);
    // Upstream rotates the moving URL: the recipe does not move by itself.
    let disk_v2 = vec![3u8; 64 << 10];
    upstream.put(
        "/noble/current/noble-server-cloudimg-amd64.img",
        disk_v2.clone(),
    );
    upstream.put("/noble/current/SHA256SUMS", sums(&disk_v2));
    assert_eq!(
        tag_of(&plan_tag(&ws, false)),
        tag_v1,
        "the lock holds the recipe"
    );
    let check = update(&ws, &["--check", "--format", "json"]);
    assert_eq!(check.code, 1, "{}", check.stderr);
    let v: Value = serde_json::from_str(&check.stdout).unwrap();
    let row = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["url"] == url.as_str())
        .unwrap();
    assert_eq!(row["status"], "changed", "{row}");
    assert_eq!(row["previous"], format!("sha256:{}", sha256_hex(&disk_v1)));
    // The reviewed change: update, and the recipe moves with the lock.
    assert_eq!(update(&ws, &[]).code, 0);
    assert_ne!(lock(&ws)["sources"][&url]["resolved_at"], Value::Null);
    assert_eq!(lock(&ws)["sources"][&url]["digest"], sha256_hex(&disk_v2));
    assert_ne!(tag_of(&plan_tag(&ws, true)), tag_v1);
    let _ = resolved_at;
    // Upstream prunes the pinned daily image: flagged, the last good entry kept.
    upstream.remove("/debian/20250806/debian-13.raw");
    let out = update(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("gone"), "{}", out.stdout);
    assert!(out.stderr.contains("no longer serves it"), "{}", out.stderr);
    let gone = &lock(&ws)["sources"][&pinned_url];
    assert_eq!(gone["digest"], sha256_hex(&[2u8; 4096]));
    assert!(
        gone["gone"].as_str().unwrap().contains("HTTP 404"),
        "{gone}"
    );
    assert_eq!(
        update(&ws, &["--check"]).code,
        0,
        "already flagged: no new movement"
    );
}

#[test]
fn a_stale_or_missing_lock_entry_is_refused_with_the_fix() {
    let (upstream, disk, url) = upstream_disk();
    let sums_a = upstream.put(
        "/a/SHA256SUMS",
        format!("{}  disk.img\n", sha256_hex(&disk)),
    );
    let sums_b = upstream.put(
        "/b/SHA256SUMS",
        format!("{}  disk.img\n", sha256_hex(&disk)),
    );
    let catalog = |sums: &str| {
        format!(
            "version: 1\nimages:\n  - name: vm\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", checksums_url: \"{sums}\" }}\n    format: containerdisk\n"
        )
    };
    let ws = Workspace::with_catalog(&catalog(&sums_a));
    assert_eq!(update(&ws, &[]).code, 0);
    // The catalog names another checksum file than the lock recorded.
    ws.write("images.yml", catalog(&sums_b));
    let out = plan_tag(&ws, true);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("images.lock is stale"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("run `imagepipe update`"),
        "{}",
        out.stderr
    );
    // A lock without the source at all.
    std::fs::write(
        ws.path().join("images.lock"),
        "{\"version\": 1, \"sources\": {}}\n",
    )
    .unwrap();
    let out = plan_tag(&ws, true);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("has no entry for it"), "{}", out.stderr);
    // A hand-edited digest is never a path into the cache.
    assert_eq!(update(&ws, &[]).code, 0);
    let text = std::fs::read_to_string(ws.path().join("images.lock")).unwrap();
    std::fs::write(
        ws.path().join("images.lock"),
        text.replace(&sha256_hex(&disk), "../../../secret.raw"),
    )
    .unwrap();
    let out = plan_tag(&ws, true);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("is not a sha256 or sha512 digest"),
        "{}",
        out.stderr
    );
    // And the build downloads what the lock says, and checks it.
    assert_eq!(update(&ws, &[]).code, 0);
    let mut c = ws.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
}

/// Kubespray, migrated from `latest` to pins: master and a release branch,
/// each with its own pin file; cleanup keeps what each branch pins.
#[test]
fn pins_on_each_branch_keep_their_images_through_cleanup() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: quay, registry: \"{}\", namespace: kubespray, insecure: true }}\nimages:\n  - name: vm-ubuntu-2404\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n    compression: none\nretention:\n  keep_last: 1\n  git:\n    repo: .\n    branches: [\"master\", \"release-*\"]\n    paths: [\"tests/cloud_images.yml\"]\n",
        reg.addr
    ));
    let dir = ws.path();
    git(dir, &["init", "-q", "-b", "master"]);
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    let release = |n: u8| {
        ws.write("disk.raw", vec![n; 4096]);
        let mut c = ws.cmd();
        // Built a day apart: the newest is the one `keep_last: 1` keeps.
        c.args(["publish", "--format", "json"]).env(
            "SOURCE_DATE_EPOCH",
            (1_700_000_000 + i64::from(n) * 86_400).to_string(),
        );
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        let tag = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["target"] == "quay")
            .unwrap()["tag"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut c = ws.cmd();
        c.args(["pin", "tests/cloud_images.yml"]).env(
            "SOURCE_DATE_EPOCH",
            (1_700_000_000 + i64::from(n) * 86_400).to_string(),
        );
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        git(dir, &["add", "-A"]);
        git(dir, &["commit", "-qm", &format!("images {n}")]);
        tag
    };
    let t1 = release(1);
    let pins = std::fs::read_to_string(dir.join("tests/cloud_images.yml")).unwrap();
    assert!(
        pins.contains(&format!(
            "vm-ubuntu-2404: {}/kubespray/vm-ubuntu-2404:{t1}\n",
            reg.addr
        )),
        "{pins}"
    );
    // The release branch is cut here, with the pin of the day.
    git(dir, &["branch", "release-2.30"]);
    let t2 = release(2);
    let t3 = release(3);
    // `pin` rewrote its line in place, kept the rest of the file.
    let pins = std::fs::read_to_string(dir.join("tests/cloud_images.yml")).unwrap();
    assert_eq!(
        pins.lines()
            .filter(|l| l.starts_with("vm-ubuntu-2404:"))
            .count(),
        1,
        "{pins}"
    );
    assert!(pins.starts_with("# Immutable image references"), "{pins}");
    let mut c = ws.cmd();
    c.args(["cleanup", "--target", "quay", "--apply", "--format", "json"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let decision = |tag: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["tag"] == tag)
            .unwrap_or_else(|| panic!("{tag} in {v}"))
            .clone()
    };
    let kept = decision(&t1);
    assert_eq!(kept["decision"], "keep", "{kept}");
    assert!(
        kept["referenced_by"]
            .to_string()
            .contains("release-2.30:tests/cloud_images.yml"),
        "{kept}"
    );
    assert_eq!(decision(&t2)["decision"], "delete", "{}", decision(&t2));
    assert_eq!(decision(&t3)["decision"], "keep");
    let exists = |tag: &str| {
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!(
                "docker://{}/kubespray/vm-ubuntu-2404:{tag}",
                reg.addr
            ))
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(exists(&t1), "the release branch's pinned image survives");
    assert!(!exists(&t2), "master's old image goes");
    assert!(exists(&t3));
}

#[test]
fn an_unreachable_upstream_is_no_reason_to_call_a_file_gone() {
    let (upstream, disk, url) = upstream_disk();
    let sums = upstream.put(
        "/a/SHA256SUMS",
        format!("{}  disk.img\n", sha256_hex(&disk)),
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: vm\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", checksums_url: \"{sums}\" }}\n    format: containerdisk\n"
    ));
    assert_eq!(update(&ws, &[]).code, 0);
    let before = std::fs::read_to_string(ws.path().join("images.lock")).unwrap();
    drop(upstream);
    let out = update(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("images.lock")).unwrap(),
        before
    );
    // And the build still works from the lock and the cache.
    let mut c = ws.cmd();
    c.args(["plan", "--offline"]);
    assert_eq!(run(c).code, 0);
}

#[test]
fn one_url_in_two_images_and_a_pinned_file_already_gone() {
    let (upstream, disk, url) = upstream_disk();
    let sums = upstream.put(
        "/a/SHA256SUMS",
        format!("{}  disk.img\n", sha256_hex(&disk)),
    );
    let pruned = format!(
        "{}/daily/20240101/old.raw",
        url.rsplit_once("/a/").unwrap().0
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: vm-pinned\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", sha256: \"{}\" }}\n    format: containerdisk\n  - name: vm-sums\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", checksums_url: \"{sums}\" }}\n    format: artifact\n  - name: vm-old\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{pruned}\", sha256: \"{}\" }}\n    format: containerdisk\n",
        sha256_hex(&disk),
        "a".repeat(64)
    ));
    let out = update(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let l = lock(&ws);
    assert_eq!(l["sources"][&url]["checksums_url"], sums.as_str());
    assert!(
        l["sources"][&pruned]["gone"]
            .as_str()
            .unwrap()
            .contains("HTTP 404")
    );
    let out = plan_tag(&ws, true);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Still gone: the lock does not change again.
    let before = std::fs::read_to_string(ws.path().join("images.lock")).unwrap();
    assert_eq!(update(&ws, &[]).code, 0);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("images.lock")).unwrap(),
        before
    );
    assert_eq!(update(&ws, &["--check"]).code, 0);
}

/// `plan --offline` fetches nothing: a `checksums_url` the lock does not
/// hold is said to be unresolved (with the fix), even while upstream would
/// answer; with the lock it plans.
#[test]
fn offline_plans_fetch_no_checksum_file() {
    let upstream = FileServer::start();
    let disk = vec![5u8; 4096];
    let url = upstream.put("/c/disk.img", disk.clone());
    let sums_url = upstream.put(
        "/c/SHA256SUMS",
        format!("{}  disk.img\n", sha256_hex(&disk)),
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: vm\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ url: \"{url}\", checksums_url: \"{sums_url}\" }}\n    format: containerdisk\n"
    ));
    assert_eq!(plan_tag(&ws, false).code, 0, "online, upstream answers");
    let offline = plan_tag(&ws, true);
    assert_eq!(offline.code, 1, "{}", offline.stderr);
    assert!(
        offline.stderr.contains("not fetched (--offline)")
            && offline.stderr.contains("imagepipe update"),
        "{}",
        offline.stderr
    );
    assert_eq!(update(&ws, &[]).code, 0);
    let locked = plan_tag(&ws, true);
    assert_eq!(locked.code, 0, "{}", locked.stderr);
}

//! `imagepipe build`: real sources, real formats, read back by skopeo, umoci and qemu-img.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::Value;

use crate::common::{FileServer, Workspace, git, qcow2, run, sh, sha256_hex, skopeo_raw};

fn catalog(source: &str, format: &str) -> String {
    format!(
        "version: 1\nimages:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {source}\n    format: {format}\n"
    )
}

fn build(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.arg("build")
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    run(c)
}

/// `name tag digest` lines of a successful build.
fn built(ws: &Workspace) -> Vec<(String, String, String)> {
    let out = build(ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect()
}

fn store(ws: &Workspace, image: &str) -> std::path::PathBuf {
    ws.path().join(".imagepipe/store").join(image)
}

fn no_temp_files(layout: &Path) {
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "left-over temporary file {name}");
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(sha256_hex(&bytes), name, "a blob's name is its digest");
    }
}

#[test]
fn containerdisk_is_readable_by_skopeo_and_umoci() {
    let ws = Workspace::with_catalog(&catalog("{ file: disks/noble.qcow2 }", "containerdisk"));
    qcow2(&ws, "disks/noble.qcow2", "16M");
    let lines = built(&ws);
    let (name, tag, digest) = &lines[0];
    assert_eq!(name, "disk");
    assert!(tag.starts_with("disk-"));
    let layout = store(&ws, "disk");
    assert!(layout.join("oci-layout").is_file());
    no_temp_files(&layout);
    let manifest = skopeo_raw(&layout, tag);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(manifest["annotations"]["io.imagepipe.image"], "disk");
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    let inspect: Value = serde_json::from_str(&sh(
        "skopeo",
        &["inspect", &format!("oci:{}:latest", layout.display())],
        ws.path(),
    ))
    .unwrap();
    assert_eq!(
        inspect["Digest"],
        digest.as_str(),
        "latest and the immutable tag share the digest"
    );
    assert_eq!(inspect["Architecture"], "amd64");
    // umoci unpacks it; the disk is owned by qemu (107) and read-only.
    let bundle = crate::common::umoci_unpack(&layout, tag, ws.path());
    let disk = bundle.join("rootfs/disk/noble.qcow2");
    let meta = std::fs::metadata(&disk).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777),
        (107, 107, 0o440)
    );
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        std::fs::read(ws.path().join("disks/noble.qcow2")).unwrap()
    );
    let info = sh(
        "qemu-img",
        &["info", "--output=json", disk.to_str().unwrap()],
        ws.path(),
    );
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
}

#[test]
fn the_bytes_are_pinned() {
    // A fixed raw disk, fixed time: if this digest changes, every user's images
    // change; bump the layout version in recipe.rs deliberately instead.
    let ws = Workspace::with_catalog(&catalog("{ file: disk.raw }", "containerdisk"));
    let disk: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    ws.write("disk.raw", &disk);
    let mut c = ws.cmd();
    c.args(["build"]).env("SOURCE_DATE_EPOCH", "0");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let digest = out.stdout.split_whitespace().nth(2).unwrap();
    assert_eq!(
        digest, "sha256:168a2fca1f594412195a6a47ab33b3065dfa96b2717ef5e23d7c007d1146c51a",
        "the image bytes changed"
    );
}

#[test]
fn same_recipe_same_digest_in_other_directories_users_and_umasks() {
    let make = |umask: &str, uid: u32| {
        let ws = Workspace::with_catalog(&catalog("{ file: disk.qcow2 }", "containerdisk"));
        let disk = qcow2(&ws, "disk.qcow2", "8M");
        std::os::unix::fs::chown(&disk, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut c = ws.cmd();
        c.arg("build").env("SOURCE_DATE_EPOCH", "1700000000");
        let out = std::process::Command::new("sh")
            .args(["-c", &format!("umask {umask}; exec \"$0\" build",)])
            .arg(assert_cmd::cargo::cargo_bin("imagepipe"))
            .current_dir(ws.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        drop(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let a = make("022", 0);
    let b = make("077", 1234);
    assert_eq!(a, b);
}

#[test]
fn concurrent_builds_share_one_store() {
    let text = "version: 1\nimages:\n".to_owned()
        + &(0..4)
            .map(|i| format!("  - name: d{i}\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: d{i}.qcow2 }}\n    format: containerdisk\n"))
            .collect::<String>();
    let ws = Workspace::with_catalog(&text);
    for i in 0..4 {
        qcow2(&ws, &format!("d{i}.qcow2"), &format!("{}M", 4 + i));
    }
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("imagepipe"))
            .arg("build")
            .current_dir(ws.path())
            .env("SOURCE_DATE_EPOCH", "1")
            .output()
            .unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(
        a.status.success() && b.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&a.stderr),
        String::from_utf8_lossy(&b.stderr)
    );
    assert_eq!(a.stdout, b.stdout, "both runs agree on every digest");
    for i in 0..4 {
        let layout = store(&ws, &format!("d{i}"));
        no_temp_files(&layout);
        let _ = skopeo_raw(&layout, "latest");
    }
}

#[test]
fn url_sources_are_cached_verified_and_decompressed() {
    let ws = Workspace::new();
    let disk = std::fs::read(qcow2(&ws, "src/disk.qcow2", "8M")).unwrap();
    let server = FileServer::start();
    let plain = server.put("/images/disk.qcow2", disk.clone());
    let mut xz = Vec::new();
    {
        let mut e = liblzma::write::XzEncoder::new(&mut xz, 6);
        std::io::Write::write_all(&mut e, &disk).unwrap();
        e.finish().unwrap();
    }
    let xz_url = server.put("/images/other.qcow2.xz", xz.clone());
    let text = format!(
        "version: 1\nimages:\n  - name: plain\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{plain}\", sha256: \"{}\" }}\n    format: containerdisk\n  - name: packed\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{xz_url}\", sha256: \"{}\" }}\n    format: containerdisk\n",
        sha256_hex(&disk),
        sha256_hex(&xz)
    );
    ws.write("images.yml", &text);
    let lines = built(&ws);
    assert_eq!(lines.len(), 2);
    assert!(
        ws.path()
            .join(".imagepipe/cache/sha256")
            .join(sha256_hex(&disk))
            .is_file()
    );
    // The xz image holds the decompressed disk under its name without `.xz`.
    let bundle = ws.path().join("b");
    sh(
        "umoci",
        &[
            "raw",
            "unpack",
            "--image",
            &format!("{}:latest", store(&ws, "packed").display()),
            bundle.to_str().unwrap(),
        ],
        ws.path(),
    );
    assert_eq!(
        std::fs::read(bundle.join("disk/other.qcow2")).unwrap(),
        disk
    );
    // A second build uses the cache: the server is gone.
    drop(server);
    std::fs::remove_dir_all(ws.path().join(".imagepipe/store")).unwrap();
    assert_eq!(built(&ws), lines);
}

#[test]
fn a_checksum_mismatch_or_truncated_download_leaves_nothing() {
    let ws = Workspace::new();
    let disk = std::fs::read(qcow2(&ws, "src/disk.qcow2", "8M")).unwrap();
    let server = FileServer::start();
    let url = server.put("/disk.qcow2", disk.clone());
    let cut = server.put("/disk.qcow2.truncated", disk.clone());
    let wrong = "0".repeat(64);
    for (u, sum) in [(&url, wrong.as_str()), (&cut, &sha256_hex(&disk))] {
        ws.write(
            "images.yml",
            catalog(
                &format!("{{ url: \"{u}\", sha256: \"{sum}\" }}"),
                "containerdisk",
            ),
        );
        let out = build(&ws, &[]);
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stdout.is_empty());
        let cache = ws.path().join(".imagepipe/cache/sha256");
        let left: Vec<_> = std::fs::read_dir(&cache)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "cache holds {left:?}");
        let layout = store(&ws, "disk");
        if layout.exists() {
            assert!(
                crate::common::sh(
                    "cat",
                    &[layout.join("index.json").to_str().unwrap()],
                    ws.path()
                )
                .contains("\"manifests\":[]")
            );
        }
    }
    ws.write(
        "images.yml",
        catalog(
            &format!("{{ url: \"{url}\", sha256: \"{wrong}\" }}"),
            "containerdisk",
        ),
    );
    let out = build(&ws, &[]);
    assert!(
        out.stderr.contains(&format!(
            "expected sha256 {wrong}, got {}",
            sha256_hex(&disk)
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_sources_fail_with_exit_1_and_no_tag() {
    let ws = Workspace::new();
    ws.write("notes.txt", b"this is not a disk\n");
    for (source, expected) in [
        (
            "{ file: missing.qcow2 }",
            "missing.qcow2: no such file or directory",
        ),
        ("{ file: notes.txt }", "is not a disk image"),
        ("{ command: { run: [./nope.sh] } }", "program not found"),
        (
            "{ command: { run: [\"false\"] } }",
            "command `false` failed",
        ),
    ] {
        ws.write("images.yml", catalog(source, "containerdisk"));
        let out = build(&ws, &[]);
        assert_eq!(out.code, 1, "{source}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{source}: expected `{expected}` in {}",
            out.stderr
        );
        let layout = store(&ws, "disk");
        if layout.join("index.json").exists() {
            let index: Value =
                serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
            assert_eq!(index["manifests"], serde_json::json!([]), "{source}");
        }
    }
}

#[test]
fn command_sources_get_the_documented_environment() {
    let ws = Workspace::with_catalog(
        "version: 1\nvariables:\n  runc: { default: \"1.2.6\", env: RUNC_VERSION }\nimages:\n  - name: node\n    kubernetes: true\n    os: { distro: ubuntu, version: \"24.04\" }\n    source: { command: { run: [./make.sh, arg1] } }\n    format: containerdisk\n    tags: [\"{name}-{kubernetes}-{hash}\"]\n",
    );
    ws.write(
        "make.sh",
        "#!/bin/sh\nset -eu\nenv | grep -E '^(IMAGEPIPE_|KUBERNETES_|SOURCE_DATE_EPOCH)' | sort > \"$PWD/env.txt\"\necho \"$1\" >> \"$PWD/env.txt\"\nqemu-img create -q -f qcow2 \"$IMAGEPIPE_OUTPUT_DIR/node.qcow2\" 4M\n",
    );
    std::fs::set_permissions(
        ws.path().join("make.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = build(&ws, &["--release", "v1.33.6/runc-1.2.6"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let env = std::fs::read_to_string(ws.path().join("env.txt")).unwrap();
    for line in [
        "IMAGEPIPE_IMAGE=node",
        "IMAGEPIPE_VAR_RUNC=1.2.6",
        "KUBERNETES_DEB_VERSION=1.33.6-1.1",
        "KUBERNETES_SEMVER=v1.33.6",
        "KUBERNETES_SERIES=v1.33",
        "SOURCE_DATE_EPOCH=1700000000",
        "arg1",
    ] {
        assert!(env.lines().any(|l| l == line), "missing {line} in\n{env}");
    }
    assert!(env.contains("IMAGEPIPE_OUTPUT_DIR="));
    assert!(
        out.stdout.starts_with("node node-v1.33.6-"),
        "{}",
        out.stdout
    );
    // Scratch directories are removed.
    assert_eq!(
        std::fs::read_dir(ws.path().join(".imagepipe/work"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn artifacts_and_multi_arch_indexes() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: art\n    os: { distro: x, version: \"1\" }\n    source: { file: a.qcow2 }\n    format: artifact\n    compression: zstd\n  - name: multi\n    os: { distro: x, version: \"1\" }\n    platforms:\n      - { platform: linux/amd64, source: { file: a.qcow2 } }\n      - { platform: linux/arm64, source: { file: b.qcow2 } }\n    format: containerdisk\n    tags: [\"{name}-{arch}-{hash}\"]\n",
    );
    qcow2(&ws, "a.qcow2", "4M");
    qcow2(&ws, "b.qcow2", "6M");
    let lines = built(&ws);
    let art = skopeo_raw(&store(&ws, "art"), &lines[0].1);
    assert_eq!(art["artifactType"], "application/vnd.imagepipe.disk.v1");
    assert_eq!(
        art["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(
        art["layers"][0]["mediaType"],
        "application/vnd.imagepipe.disk.qcow2+zstd"
    );
    assert_eq!(
        art["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "a.qcow2"
    );
    assert!(
        lines[1].1.starts_with("multi-amd64-arm64-"),
        "{:?}",
        lines[1]
    );
    let index = skopeo_raw(&store(&ws, "multi"), &lines[1].1);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let arches: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    // skopeo can pick a platform out of the index.
    let arm: Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "--override-arch",
            "arm64",
            "inspect",
            &format!("oci:{}:{}", store(&ws, "multi").display(), lines[1].1),
        ],
        ws.path(),
    ))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");
}

#[test]
fn rootfs_keeps_modes_links_and_owners() {
    let ws = Workspace::with_catalog(&catalog("{ file: root }", "rootfs"));
    let root = ws.path().join("root");
    for d in ["bin", "etc", "tmp", "usr/lib"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("bin/su"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("bin/su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(root.join("etc/hostname"), b"node\n").unwrap();
    std::os::unix::fs::chown(root.join("etc/hostname"), Some(1000), Some(1001)).unwrap();
    std::fs::hard_link(root.join("etc/hostname"), root.join("etc/hostname.bak")).unwrap();
    std::os::unix::fs::symlink("../bin/su", root.join("usr/su")).unwrap();
    std::os::unix::fs::symlink("/bin/su", root.join("usr/lib/su")).unwrap();
    let lines = built(&ws);
    let bundle = crate::common::umoci_unpack(&store(&ws, "disk"), &lines[0].1, ws.path());
    let r = bundle.join("rootfs");
    let mode = |p: &str| {
        std::fs::symlink_metadata(r.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("bin/su"), 0o4755);
    assert_eq!(mode("tmp"), 0o1777);
    let host = std::fs::metadata(r.join("etc/hostname")).unwrap();
    assert_eq!((host.uid(), host.gid()), (1000, 1001));
    assert_eq!(
        host.ino(),
        std::fs::metadata(r.join("etc/hostname.bak")).unwrap().ino(),
        "hard link kept"
    );
    assert_eq!(
        std::fs::read_link(r.join("usr/su")).unwrap(),
        Path::new("../bin/su")
    );
    assert_eq!(
        std::fs::read_link(r.join("usr/lib/su")).unwrap(),
        Path::new("/bin/su")
    );
    // The layer is sorted, with one mtime and no user names.
    let listing = sh(
        "sh",
        &[
            "-c",
            &format!(
                "tar -tvzf {}",
                store(&ws, "disk")
                    .join("blobs/sha256")
                    .join(
                        skopeo_raw(&store(&ws, "disk"), &lines[0].1)["layers"][0]["digest"]
                            .as_str()
                            .unwrap()
                            .trim_start_matches("sha256:")
                    )
                    .display()
            ),
        ],
        ws.path(),
    );
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().nth(5).unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort_unstable();
    assert_eq!(names, sorted);
    assert!(
        listing.lines().all(|l| l.contains("2023-11-14")),
        "{listing}"
    );
    assert!(
        listing.lines().all(|l| l
            .split_whitespace()
            .nth(1)
            .unwrap()
            .chars()
            .all(|c| c.is_ascii_digit() || c == '/')),
        "numeric owners: {listing}"
    );
}

#[test]
fn hostile_rootfs_tarballs_are_refused() {
    let ws = Workspace::new();
    let cases = [
        (
            "absolute",
            "/etc/passwd",
            tar::EntryType::Regular,
            None,
            "is an absolute path",
        ),
        (
            "dotdot",
            "a/../../etc/passwd",
            tar::EntryType::Regular,
            None,
            "contains `..`",
        ),
        (
            "symlink escape",
            "a/link",
            tar::EntryType::Symlink,
            Some("../../../etc/shadow"),
            "escapes the root filesystem",
        ),
        (
            "hardlink escape",
            "a/hl",
            tar::EntryType::Link,
            Some("../../etc/shadow"),
            "points outside the root",
        ),
    ];
    for (what, name, kind, link, expected) in cases {
        let mut b = tar::Builder::new(Vec::new());
        raw_entry(&mut b, name, kind, link);
        ws.write("root.tar", b.into_inner().unwrap());
        ws.write("images.yml", catalog("{ file: root.tar }", "rootfs"));
        let out = build(&ws, &[]);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{what}: expected `{expected}` in {}",
            out.stderr
        );
        no_temp_files(&store(&ws, "disk"));
    }
}

/// Writes a tar entry with a raw name (the tar crate refuses `..` through its safe API).
fn raw_entry(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: Option<&str>) {
    let mut h = tar::Header::new_old();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o644);
    let bytes = h.as_old_mut();
    bytes.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        bytes.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
}

#[test]
fn rootfs_tarballs_are_normalised() {
    let ws = Workspace::with_catalog(&catalog("{ file: root.tar.gz }", "rootfs"));
    let root = ws.path().join("r");
    std::fs::create_dir_all(root.join("b/c")).unwrap();
    std::fs::write(root.join("b/c/f"), b"x").unwrap();
    std::fs::write(root.join("a"), b"y").unwrap();
    // GNU tar with arbitrary order and times; our layer is sorted with one mtime.
    sh(
        "tar",
        &["-czf", "root.tar.gz", "-C", "r", "./b", "./a"],
        ws.path(),
    );
    let one = built(&ws);
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    sh(
        "touch",
        &["-d", "2001-01-01", root.join("a").to_str().unwrap()],
        ws.path(),
    );
    sh(
        "tar",
        &["-czf", "root.tar.gz", "-C", "r", "./a", "./b"],
        ws.path(),
    );
    let two = built(&ws);
    assert_ne!(
        one[0].1, two[0].1,
        "the tarball's bytes changed, so its recipe did"
    );
    // ...but the layer is the same bytes: order and times are normalised.
    let layer = |tag: &str| skopeo_raw(&store(&ws, "disk"), tag)["layers"][0]["digest"].clone();
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    sh(
        "tar",
        &["-czf", "root.tar.gz", "-C", "r", "./b", "./a"],
        ws.path(),
    );
    let three = built(&ws);
    let first_layer = layer(&three[0].1);
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    sh(
        "tar",
        &["-czf", "root.tar.gz", "-C", "r", "./a", "./b"],
        ws.path(),
    );
    let four = built(&ws);
    assert_eq!(first_layer, layer(&four[0].1));
}

#[test]
fn immutable_tags_are_never_silently_rebuilt() {
    // A builder that is not reproducible: each run writes other bytes.
    let ws = Workspace::with_catalog(&catalog(
        "{ command: { run: [./random.sh] } }",
        "containerdisk",
    ));
    let script = ws.write(
        "random.sh",
        "#!/bin/sh\nhead -c 65536 /dev/urandom > \"$IMAGEPIPE_OUTPUT_DIR/disk.raw\"\n",
    );
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let first = built(&ws);
    // The store keeps what the tag names: the builder does not run again.
    let again = build(&ws, &[]);
    assert_eq!(again.code, 0);
    assert!(
        again.stderr.contains("already in the store"),
        "{}",
        again.stderr
    );
    assert_eq!(
        again.stdout.split_whitespace().nth(2),
        Some(first[0].2.as_str())
    );
    // Only --force rebuilds and moves it.
    let forced = build(&ws, &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(
        forced.stdout.split_whitespace().nth(1),
        Some(first[0].1.as_str())
    );
    assert_ne!(
        forced.stdout.split_whitespace().nth(2),
        Some(first[0].2.as_str())
    );
}

#[test]
fn json_output() {
    let ws = Workspace::with_catalog(&catalog("{ file: disk.qcow2 }", "containerdisk"));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = build(&ws, &["--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["image"], "disk");
    assert!(
        v["items"][0]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(v["items"][0]["mutable_tags"], serde_json::json!(["latest"]));
    assert_eq!(v["failures"], serde_json::json!([]));
}

#[test]
fn packer_builds_with_the_release_variables() {
    let ws = Workspace::with_catalog(
        "version: 1\nvariables:\n  runc: { default: \"1.2.6\", env: RUNC_VERSION }\n  containerd: \"2.0.4\"\nimages:\n  - name: node\n    kubernetes: true\n    os: { distro: ubuntu, version: \"24.04\" }\n    source:\n      packer: { template: packer/node.json, vars: { image_name: \"{name}-{kubernetes}\" }, inputs: [base.qcow2] }\n    format: containerdisk\n    tags: [\"{name}-{kubernetes}-{hash}\"]\n",
    );
    qcow2(&ws, "base.qcow2", "4M");
    // Packer's offline `file` builder copies the disk; shell-local records the
    // variables it received; the manifest post-processor names the artifact.
    let template = serde_json::json!({
        "variables": {
            "kubernetes_semver": "", "kubernetes_series": "", "kubernetes_deb_version": "",
            "runc_version": "", "containerd_version": "", "image_name": "", "output_directory": "out",
        },
        "builders": [{ "type": "file", "source": "base.qcow2", "target": "{{user `output_directory`}}/{{user `image_name`}}.qcow2" }],
        "post-processors": [
            { "type": "shell-local", "inline": ["echo {{user `kubernetes_semver`}} {{user `kubernetes_series`}} {{user `kubernetes_deb_version`}} {{user `runc_version`}} {{user `containerd_version`}} {{user `image_name`}} > packer-vars.txt"] },
            { "type": "manifest", "output": "{{user `output_directory`}}/packer-manifest.json" },
        ],
    });
    ws.write(
        "packer/node.json",
        serde_json::to_vec_pretty(&template).unwrap(),
    );
    let mut c = ws.cmd();
    c.args(["build", "--release", "v1.33.6/runc-1.2.6"])
        .env("RUNC_VERSION", "1.2.7")
        .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("packer-vars.txt"))
            .unwrap()
            .trim(),
        "v1.33.6 v1.33 1.33.6-1.1 1.2.7 2.0.4 node-v1.33.6"
    );
    let tag = out.stdout.split_whitespace().nth(1).unwrap().to_owned();
    let bundle = ws.path().join("b");
    sh(
        "umoci",
        &[
            "raw",
            "unpack",
            "--image",
            &format!("{}:{tag}", store(&ws, "node").display()),
            bundle.to_str().unwrap(),
        ],
        ws.path(),
    );
    assert!(bundle.join("disk/node-v1.33.6.qcow2").is_file());
    let m = skopeo_raw(&store(&ws, "node"), &tag);
    assert_eq!(m["annotations"]["io.imagepipe.kubernetes"], "v1.33.6");
    assert_eq!(m["annotations"]["io.imagepipe.runc"], "1.2.7");
    // A template that does not exist is a clear failure.
    ws.write(
        "images.yml",
        std::fs::read_to_string(ws.path().join("images.yml"))
            .unwrap()
            .replace("packer/node.json", "packer/missing.json"),
    );
    let mut c = ws.cmd();
    c.args(["build", "--release", "v1.33.6"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("packer/missing.json: no such file or directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn packer_var_files_apply_in_order_and_are_part_of_the_recipe() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: node\n    kubernetes: true\n    os: { distro: ubuntu, version: \"24.04\" }\n    source:\n      packer: { template: node.json, var_files: [packer/kubernetes.json, packer/site.json], inputs: [base.qcow2] }\n    format: containerdisk\n    tags: [\"{name}-{kubernetes}-{hash}\"]\n",
    );
    qcow2(&ws, "base.qcow2", "4M");
    let template = serde_json::json!({
        "variables": { "kubernetes_semver": "", "cni": "", "site": "", "output_directory": "out" },
        "builders": [{ "type": "file", "source": "base.qcow2", "target": "{{user `output_directory`}}/node.qcow2" }],
        "post-processors": [
            { "type": "shell-local", "inline": ["echo {{user `kubernetes_semver`}} {{user `cni`}} {{user `site`}} > packer-vars.txt"] },
            { "type": "manifest", "output": "{{user `output_directory`}}/packer-manifest.json" },
        ],
    });
    ws.write("node.json", serde_json::to_vec_pretty(&template).unwrap());
    // image-builder style layering: a later file overrides an earlier one,
    // and imagepipe's release facts override both.
    ws.write(
        "packer/kubernetes.json",
        r#"{ "kubernetes_semver": "v0.0.0", "cni": "1.5.0", "site": "upstream" }"#,
    );
    ws.write("packer/site.json", r#"{ "site": "ours" }"#);
    let build = |ws: &Workspace| {
        let mut c = ws.cmd();
        c.args(["build", "--release", "v1.33.6"])
            .env("SOURCE_DATE_EPOCH", "1");
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.split_whitespace().nth(1).unwrap().to_owned()
    };
    let first = build(&ws);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("packer-vars.txt"))
            .unwrap()
            .trim(),
        "v1.33.6 1.5.0 ours"
    );
    // Changing a var file changes what is built, so it changes the hash.
    ws.write("packer/site.json", r#"{ "site": "theirs" }"#);
    let second = build(&ws);
    assert_ne!(first, second);
    assert_eq!(
        std::fs::read_to_string(ws.path().join("packer-vars.txt"))
            .unwrap()
            .trim(),
        "v1.33.6 1.5.0 theirs"
    );
    // A var file that does not exist is named in the error.
    std::fs::remove_file(ws.path().join("packer/site.json")).unwrap();
    let mut c = ws.cmd();
    c.args(["build", "--release", "v1.33.6"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("packer/site.json"), "{}", out.stderr);
}

#[test]
fn mmdebstrap_builds_a_real_debian_rootfs() {
    if !crate::common::slow_tests_enabled() {
        eprintln!("skipped: set IMAGEPIPE_SLOW_TESTS=1 (needs deb.debian.org, about a minute)");
        return;
    }
    let ws = Workspace::with_catalog(&catalog(
        "{ mmdebstrap: { suite: bookworm, variant: apt, mirror: \"http://deb.debian.org/debian\" } }",
        "rootfs",
    ));
    let mut c = ws.cmd();
    c.arg("plan");
    let plan = run(c);
    assert!(
        plan.stdout.contains("(from built content)"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("not a snapshot mirror"),
        "{}",
        plan.stdout
    );
    let lines = built(&ws);
    let bundle = crate::common::umoci_unpack(&store(&ws, "disk"), &lines[0].1, ws.path());
    let os_release = std::fs::read_to_string(bundle.join("rootfs/etc/os-release")).unwrap();
    assert!(os_release.contains("bookworm"), "{os_release}");
    assert!(bundle.join("rootfs/usr/bin/apt").is_file());
}

#[test]
fn the_job_image_builds_from_its_catalog_and_runs_its_tools() {
    if !crate::common::slow_tests_enabled() {
        eprintln!("skipped: set IMAGEPIPE_SLOW_TESTS=1 (needs deb.debian.org, about a minute)");
        return;
    }
    if sh("id", &["-u"], Path::new("/")).trim() != "0" {
        eprintln!("skipped: mmdebstrap --mode=root and chroot need root");
        return;
    }
    // packaging/ as the release workflow uses it, with the binary under test.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging");
    let ws = Workspace::new();
    for f in ["images.yml", "build-rootfs.sh"] {
        std::fs::copy(repo.join(f), ws.path().join(f)).unwrap();
    }
    ws.write(
        "bin/imagepipe",
        std::fs::read(assert_cmd::cargo::cargo_bin("imagepipe")).unwrap(),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ws.path().join("bin/imagepipe"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut c = ws.cmd();
    c.args(["build"])
        .env("DEBIAN_MIRROR", "http://deb.debian.org/debian")
        .env("IMAGEPIPE_VERSION", "v9.8.7");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tag = out.stdout.split(' ').nth(1).unwrap().to_owned();
    assert!(tag.starts_with("v9.8.7-"), "{}", out.stdout);

    // What a runtime reads: PATH set, a shell as the command, no entrypoint.
    let layout = store(&ws, "imagepipe");
    let config: serde_json::Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:{tag}", layout.display()),
        ],
        ws.path(),
    ))
    .unwrap();
    let env = config["config"]["Env"].as_array().unwrap();
    assert!(
        env.iter().any(|e| e
            .as_str()
            .unwrap()
            .starts_with("PATH=/usr/local/sbin:/usr/local/bin:")),
        "{config}"
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/bash"]));
    assert!(config["config"].get("Entrypoint").is_none(), "{config}");

    // Every tool the jobs need runs inside it, imagepipe included.
    let bundle = crate::common::umoci_unpack(&layout, &tag, ws.path());
    let rootfs = bundle.join("rootfs");
    let version = sh(
        "chroot",
        &[rootfs.to_str().unwrap(), "imagepipe", "--version"],
        ws.path(),
    );
    assert_eq!(
        version.trim(),
        format!("imagepipe {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(
        sh(
            "chroot",
            &[rootfs.to_str().unwrap(), "qemu-img", "--version"],
            ws.path()
        )
        .contains("qemu-img version")
    );
    for tool in ["qemu-system-x86_64", "genisoimage"] {
        sh(
            "chroot",
            &[rootfs.to_str().unwrap(), tool, "--version"],
            ws.path(),
        );
    }
    assert!(
        sh(
            "chroot",
            &[rootfs.to_str().unwrap(), "git", "--version"],
            ws.path()
        )
        .starts_with("git version")
    );
    assert!(rootfs.join("etc/ssl/certs/ca-certificates.crt").is_file());

    // The binary is an input: another binary is another image.
    let mut bytes = std::fs::read(ws.path().join("bin/imagepipe")).unwrap();
    bytes.extend_from_slice(b"\0");
    std::fs::write(ws.path().join("bin/imagepipe"), bytes).unwrap();
    let mut c = ws.cmd();
    c.args(["plan", "--offline"])
        .env("DEBIAN_MIRROR", "http://deb.debian.org/debian")
        .env("IMAGEPIPE_VERSION", "v9.8.7");
    let plan = run(c);
    assert!(!plan.stdout.contains(&tag), "{}", plan.stdout);
}

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly() {
    let ws = Workspace::with_catalog(
        "version: 1\ntargets:\n  - { name: local, layout: ./small/store }\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: big.raw }\n    format: containerdisk\n    compression: none\n",
    );
    let Some(_disk) = SmallDisk::mount(&ws.path().join("small"), "4m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let noise: Vec<u8> = (0..16u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    ws.write("big.raw", &noise);
    let out = build(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("No space left on device"),
        "{}",
        out.stderr
    );
    let layout = ws.path().join("small/store/disk");
    no_temp_files(&layout);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"],
        serde_json::json!([]),
        "no tag for a partial image"
    );
}

/// The README's first command: the quickstart catalog builds from the
/// repository root (and from anywhere else), its relative `./make-disk.sh`
/// resolved against the catalog's directory.
#[test]
fn the_quickstart_builds_from_any_working_directory() {
    let ws = Workspace::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart");
    for name in ["images.yml", "make-disk.sh"] {
        let dest = ws.write(
            &format!("repo/examples/quickstart/{name}"),
            std::fs::read(example.join(name)).unwrap(),
        );
        std::fs::set_permissions(
            &dest,
            std::fs::metadata(example.join(name)).unwrap().permissions(),
        )
        .unwrap();
    }
    for cwd in ["repo", "repo/examples", "."] {
        let catalog = Path::new("repo/examples/quickstart/images.yml");
        let rel = pathdiff(catalog, Path::new(cwd));
        let mut c = ws.cmd();
        c.current_dir(ws.path().join(cwd))
            .arg("build")
            .arg("-c")
            .arg(&rel);
        let out = run(c);
        assert_eq!(out.code, 0, "from {cwd}: {}", out.stderr);
        assert!(
            out.stdout.starts_with("blank-disk blank-disk-"),
            "{}",
            out.stdout
        );
    }
    let layout = ws
        .path()
        .join("repo/examples/quickstart/.imagepipe/store/blank-disk");
    assert!(layout.join("index.json").is_file());
    assert!(
        !ws.path().join("repo/.imagepipe").exists(),
        "the store lives beside the catalog"
    );
}

/// `target` relative to `from`, for paths below one common root.
fn pathdiff(target: &Path, from: &Path) -> std::path::PathBuf {
    let ups = from
        .components()
        .filter(|c| matches!(c, std::path::Component::Normal(_)))
        .count();
    let mut p = std::path::PathBuf::new();
    for _ in 0..ups {
        p.push("..");
    }
    p.join(target)
}

/// A build that fails before it has anything to store leaves no store behind.
#[test]
fn a_failed_build_leaves_no_empty_store() {
    let ws = Workspace::with_catalog(&catalog(
        "{ command: { run: [./missing.sh] } }",
        "containerdisk",
    ));
    let out = build(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("missing.sh"), "{}", out.stderr);
    assert!(
        !ws.path().join(".imagepipe/store/disk").exists(),
        "no empty layout is left"
    );
}

/// An immutable tag names one digest on any machine, at any commit, at any
/// time: two clones at different commits, built apart with empty stores and
/// no `SOURCE_DATE_EPOCH`, give the same tag and byte-identical digests, and
/// a fixed `SOURCE_DATE_EPOCH` gives its own tag (it is part of the recipe).
#[test]
fn two_clones_at_different_commits_build_identical_images() {
    let ws = Workspace::new();
    let origin = ws.path().join("origin");
    std::fs::create_dir_all(&origin).unwrap();
    std::fs::write(
        origin.join("images.yml"),
        catalog("{ file: disk.qcow2 }", "containerdisk"),
    )
    .unwrap();
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "disk.qcow2", "8M"],
        &origin,
    );
    git(&origin, &["init", "-q"]);
    git(&origin, &["add", "."]);
    git(&origin, &["commit", "-qm", "one"]);
    let build_in = |clone: &str, commit_msg: Option<&str>, sde: Option<&str>| {
        let dir = ws.path().join(clone);
        if !dir.exists() {
            git(ws.path(), &["clone", "-q", "origin", clone]);
        }
        if let Some(m) = commit_msg {
            git(
                &dir,
                &[
                    "commit",
                    "-q",
                    "--allow-empty",
                    "--date=2001-02-03T04:05:06",
                    "-m",
                    m,
                ],
            );
        }
        let _ = std::fs::remove_dir_all(dir.join(".imagepipe"));
        let mut c = ws.cmd();
        c.current_dir(&dir)
            .arg("build")
            .env("CI_PIPELINE_ID", clone);
        if let Some(s) = sde {
            c.env("SOURCE_DATE_EPOCH", s);
        }
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let f: Vec<String> = out.stdout.split_whitespace().map(str::to_owned).collect();
        (
            f[1].clone(),
            f[2].clone(),
            dir.join(".imagepipe/store/disk"),
        )
    };
    let (tag_a, digest_a, layout_a) = build_in("a", None, None);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (tag_b, digest_b, layout_b) = build_in("b", Some("another commit"), None);
    assert_eq!(tag_a, tag_b, "the commit is not part of the identity");
    assert_eq!(digest_a, digest_b, "the same tag names the same bytes");
    let entry = |layout: &std::path::Path| {
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag_a.as_str())
            .cloned()
            .unwrap()
    };
    assert_eq!(
        entry(&layout_a),
        entry(&layout_b),
        "nothing of the run reaches the store's index entry either"
    );
    let manifest = skopeo_raw(&layout_a, &tag_a);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.created"], "1970-01-01T00:00:00Z",
        "the documented default timestamp"
    );
    assert!(
        manifest["annotations"]
            .get("org.opencontainers.image.revision")
            .is_none()
    );
    let (tag_c, digest_c, _) = build_in("a", None, Some("1700000000"));
    let (tag_d, digest_d, _) = build_in("b", Some("third"), Some("1700000000"));
    assert_ne!(tag_c, tag_a, "SOURCE_DATE_EPOCH enters the recipe hash");
    assert_eq!((tag_c, digest_c), (tag_d, digest_d));
}

/// Valid tarballs made by GNU tar become layers GNU tar and umoci unpack:
/// a hard link that sorts before its target is written after it; sparse
/// members, truncated tarballs and paths through a symlink are refused with
/// the member named; 100,000 entries build.
#[test]
fn every_valid_tarball_makes_a_layer_unpackers_accept() {
    let ws = Workspace::with_catalog(&catalog("{ file: root.tar }", "rootfs"));
    let r = ws.path().join("r");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::write(r.join("bin/hi2"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::hard_link(r.join("bin/hi2"), r.join("bin/hi")).unwrap();
    // GNU tar stores bin/hi2 first and bin/hi as a link to it; sorted,
    // bin/hi comes first.
    sh(
        "tar",
        &["-cf", "root.tar", "-C", "r", "bin/hi2", "bin/hi"],
        ws.path(),
    );
    let lines = built(&ws);
    let layout = store(&ws, "disk");
    let manifest = skopeo_raw(&layout, &lines[0].1);
    let blob = layout.join("blobs/sha256").join(
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let listing = sh("tar", &["-tvzf", blob.to_str().unwrap()], ws.path());
    let hi = listing.lines().position(|l| l.ends_with("bin/hi")).unwrap();
    let hi2 = listing.lines().position(|l| l.contains("bin/hi2")).unwrap();
    assert!(hi < hi2, "{listing}");
    assert!(
        listing.lines().nth(hi2).unwrap().contains("link to bin/hi"),
        "{listing}"
    );
    let out = ws.path().join("gnu");
    std::fs::create_dir_all(&out).unwrap();
    sh(
        "tar",
        &["-xzf", blob.to_str().unwrap(), "-C", out.to_str().unwrap()],
        ws.path(),
    );
    assert_eq!(
        std::fs::read(out.join("bin/hi")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(std::fs::metadata(out.join("bin/hi2")).unwrap().nlink(), 2);
    sh(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:{}", layout.display(), lines[0].1),
            "bundle",
        ],
        ws.path(),
    );
    assert_eq!(
        std::fs::read(ws.path().join("bundle/rootfs/bin/hi2")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );

    let refused = |what: &str, expected: &str| {
        ws.write("images.yml", catalog("{ file: root.tar }", "rootfs"));
        let out = build(&ws, &[]);
        assert_eq!(out.code, 1, "{what}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{what}: {}", out.stderr);
    };
    // Sparse members, GNU and PAX.
    std::fs::remove_dir_all(&r).unwrap();
    std::fs::create_dir_all(&r).unwrap();
    let f = std::fs::File::create(r.join("sparse.img")).unwrap();
    f.set_len(8 << 20).unwrap();
    for (format, case) in [
        ("--format=gnu", "GNU sparse"),
        ("--format=posix", "PAX sparse"),
    ] {
        sh(
            "tar",
            &[format, "-S", "-cf", "root.tar", "-C", "r", "sparse.img"],
            ws.path(),
        );
        refused(case, "sparse member");
    }
    // A truncated tarball.
    std::fs::write(r.join("big"), vec![7u8; 1 << 20]).unwrap();
    sh("tar", &["-cf", "root.tar", "-C", "r", "big"], ws.path());
    let t = std::fs::OpenOptions::new()
        .write(true)
        .open(ws.path().join("root.tar"))
        .unwrap();
    t.set_len(300 * 1024).unwrap();
    refused("truncated", "truncated");
    // A path through a symlink of the archive.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(0);
    b.append_link(&mut h, "etcl", "/etc").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.set_cksum();
    b.append_data(&mut h, "etcl/shadow", &b"x"[..]).unwrap();
    ws.write("root.tar", b.into_inner().unwrap());
    refused("through a symlink", "lies under `etcl`, a symlink");
    // 100,000 entries.
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..100_000u32 {
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, format!("d{}/f{i}", i % 100), &i.to_le_bytes()[..])
            .unwrap();
    }
    ws.write("root.tar", b.into_inner().unwrap());
    ws.write("images.yml", catalog("{ file: root.tar }", "rootfs"));
    let out = build(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// `-q` keeps stderr to warnings and errors; `-v` adds debug lines;
/// `--no-progress` is accepted everywhere; `-q -v` is a usage error.
#[test]
fn verbosity_flags() {
    let ws = Workspace::with_catalog(&catalog("{ file: disk.qcow2 }", "containerdisk"));
    qcow2(&ws, "disk.qcow2", "4M");
    let with = |args: &[&str]| {
        let mut c = ws.cmd();
        c.args(args).env_remove("IMAGEPIPE_LOG");
        run(c)
    };
    let quiet = with(&["build", "-q", "--no-progress"]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    let normal = with(&["build", "--force"]);
    assert!(normal.stderr.contains("INFO"), "{}", normal.stderr);
    assert!(!normal.stderr.contains("DEBUG"), "{}", normal.stderr);
    let verbose = with(&["-v", "plan", "--offline"]);
    assert_eq!(verbose.code, 0, "{}", verbose.stderr);
    assert!(verbose.stderr.contains("DEBUG"), "{}", verbose.stderr);
    let both = with(&["build", "-q", "-v"]);
    assert_eq!(both.code, 2, "{}", both.stderr);
}

#[test]
fn labels_go_into_the_config_and_the_manifest_and_the_recipe() {
    let with = |labels: &str| {
        catalog("{ file: disk.qcow2 }", "containerdisk").replace(
            "    format: containerdisk\n",
            &format!("    format: containerdisk\n    labels:\n{labels}"),
        )
    };
    let ws = Workspace::with_catalog(&with(
        "      org.opencontainers.image.authors: \"Kubespray maintainers\"\n",
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let lines = built(&ws);
    let (_, tag, _) = &lines[0];
    let inspect: Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "inspect",
            &format!("oci:{}:{tag}", store(&ws, "disk").display()),
        ],
        ws.path(),
    ))
    .unwrap();
    assert_eq!(
        inspect["Labels"]["org.opencontainers.image.authors"], "Kubespray maintainers",
        "{inspect}"
    );
    let manifest = skopeo_raw(&store(&ws, "disk"), tag);
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.authors"],
        "Kubespray maintainers"
    );
    // Another label, another recipe; none, the recipe of an image without.
    ws.write(
        "images.yml",
        with("      org.opencontainers.image.authors: \"someone else\"\n"),
    );
    let other = built(&ws);
    assert_ne!(other[0].1, *tag);
    // Keys imagepipe writes, keys that are not annotation keys, non-strings.
    for (labels, said) in [
        ("      io.imagepipe.recipe: x\n", "is written by imagepipe"),
        (
            "      org.opencontainers.image.created: x\n",
            "is written by imagepipe",
        ),
        ("      \"has space\": x\n", "is not an annotation key"),
        ("      org.example.list: [a, b]\n", "must be a string"),
    ] {
        ws.write("images.yml", with(labels));
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{labels}");
        assert!(out.stderr.contains(said), "{labels}: {}", out.stderr);
    }
}

//! One recipe, one digest (SPEC §3), on real data: disks of real files give
//! the same image with every compression, at every thread count, in
//! separate processes, in fresh clones, and on one core.

use std::path::{Path, PathBuf};

use crate::common::{Workspace, ext4_fixture, git, run, sh};

/// The first `limit` bytes of GNU tar's archive of `dir`.
fn tar_of(dir: &str, limit: usize) -> Vec<u8> {
    let out = std::process::Command::new("tar")
        .args(["-cf", "-", "-C", dir, "."])
        .output()
        .unwrap();
    let mut bytes = out.stdout;
    assert!(bytes.len() >= limit, "{dir}: {} bytes", bytes.len());
    bytes.truncate(limit);
    bytes
}

/// A raw disk of this machine's files: text and compressed files
/// (`/usr/share/doc`), ELF binaries (`/usr/bin`) and a real ext4 image,
/// padded to 512 bytes, written to `rel` in `ws`.
fn real_files_disk(ws: &Workspace, rel: &str) -> PathBuf {
    const MIB: usize = 1 << 20;
    let mut disk = tar_of("/usr/share/doc", 10 * MIB + 12_345);
    disk.extend(tar_of("/usr/bin", 8 * MIB - 999));
    disk.extend(ext4_fixture());
    disk.resize(disk.len().next_multiple_of(512), 0);
    ws.write(rel, disk)
}

fn image(name: &str, source: &str, format: &str, compression: Option<&str>) -> String {
    let c = compression.map_or(String::new(), |c| format!("    compression: \"{c}\"\n"));
    format!(
        "  - name: {name}\n    os: {{ distro: none, version: \"1\" }}\n    source: {source}\n    format: {format}\n{c}"
    )
}

/// `name tag digest` lines of a successful build, with `envs` set.
fn build(ws: &Workspace, envs: &[(&str, &str)]) -> String {
    // A fresh store and cache for every build: nothing is reused.
    let _ = std::fs::remove_dir_all(ws.path().join(".imagepipe"));
    let mut c = ws.cmd();
    c.args(["build", "-q"]);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

#[test]
fn every_compression_gives_one_digest_at_every_thread_count() {
    let ws = Workspace::new();
    real_files_disk(&ws, "disk.raw");
    // A rootfs directory of real files too: text, ELF, compressed.
    let usr = ws.path().join("rootfs/usr");
    std::fs::create_dir_all(usr.join("share/doc")).unwrap();
    std::fs::create_dir_all(usr.join("bin")).unwrap();
    sh(
        "cp",
        &["-r", "/usr/share/common-licenses", "rootfs/usr/share/"],
        ws.path(),
    );
    sh(
        "cp",
        &["-r", "/usr/share/doc/dpkg", "rootfs/usr/share/doc/"],
        ws.path(),
    );
    for bin in ["tar", "sed", "gzip"] {
        std::fs::copy(format!("/usr/bin/{bin}"), usr.join("bin").join(bin)).unwrap();
    }
    let disk = "{ file: disk.raw }";
    let mut catalog = String::from("version: 1\nimages:\n");
    for (name, compression) in [
        ("default", None),
        ("gzip-1", Some("gzip:1")),
        ("gzip-6", Some("gzip:6")),
        ("gzip-9", Some("gzip:9")),
        ("zstd", Some("zstd")),
        ("zstd-9", Some("zstd:9")),
        ("none", Some("none")),
    ] {
        catalog.push_str(&image(name, disk, "containerdisk", compression));
    }
    catalog.push_str(&image("artifact", disk, "artifact", Some("gzip:6")));
    catalog.push_str(&image("rootfs", "{ file: rootfs }", "rootfs", None));
    ws.write("images.yml", &catalog);

    let reference = build(&ws, &[("IMAGEPIPE_THREADS", "1")]);
    assert_eq!(reference.lines().count(), 9, "{reference}");
    for threads in ["2", "3", "4", "8"] {
        let got = build(&ws, &[("IMAGEPIPE_THREADS", threads)]);
        assert!(
            got == reference,
            "{threads} threads:\n{got}\n1 thread:\n{reference}"
        );
    }
    // Every core, as CI runs it.
    assert_eq!(build(&ws, &[]), reference);
}

#[test]
fn two_fresh_clones_agree_with_one_pinned_to_one_core() {
    let origin = Workspace::new();
    git(origin.path(), &["init", "-q"]);
    origin.write(
        "images.yml",
        format!(
            "version: 1\nimages:\n{}",
            image("ci-disk", "{ file: disks/real.raw }", "containerdisk", None)
        ),
    );
    real_files_disk(&origin, "disks/real.raw");
    git(origin.path(), &["add", "."]);
    git(origin.path(), &["commit", "-q", "-m", "catalog"]);

    let clone = |name: &str| {
        let ws = Workspace::new();
        let dest = ws.path().join(name);
        git(
            ws.path(),
            &["clone", "-q", origin.path().to_str().unwrap(), name],
        );
        (ws, dest)
    };
    let (wa, a) = clone("a");
    let (wb, b) = clone("b");
    let build_in = |ws: &Workspace, dir: &Path, pinned: bool| {
        let mut c = if pinned {
            let mut c = std::process::Command::new("taskset");
            c.args(["-c", "0"])
                .arg(assert_cmd::cargo::cargo_bin("imagepipe"));
            ws.clean_env(&mut c);
            c
        } else {
            ws.process()
        };
        let out = c.args(["build", "-q"]).current_dir(dir).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sh("taskset", &["-c", "0", "nproc"], &a).trim(), "1");
    let everywhere = build_in(&wa, &a, false);
    let one_core = build_in(&wb, &b, true);
    assert!(everywhere.starts_with("ci-disk ci-disk-"), "{everywhere}");
    assert_eq!(one_core, everywhere);
}

/// The digests of the committed real-files fixture. A change here changes
/// every image imagepipe builds: bump `LAYOUT_VERSION` (src/recipe.rs) with
/// it, so that no immutable tag names two digests.
const PINNED: [(&str, &str); 3] = [
    (
        "ext4-gzip",
        "ext4-gzip-f7f16a83e9f1 sha256:3fec0b0faad6af8f02dbb3ed244576dc3679306cd0ad7fff81854c65f0677411",
    ),
    (
        "ext4-zstd",
        "ext4-zstd-95c6f8029c99 sha256:bc9dc8ae2d51f3f07561638c57e0447b95e81903ec4f6391ee6d71fadb5c10de",
    ),
    (
        "ext4-none",
        "ext4-none-62726ed43dc7 sha256:c045dde102c28d6752ba78cf5bcb0a3e37e40910fc7621595203078985a634ea",
    ),
];

#[test]
fn the_real_files_fixture_has_pinned_digests() {
    let ws = Workspace::new();
    ws.write("real-files.ext4", ext4_fixture());
    let mut catalog = String::from("version: 1\nimages:\n");
    for (name, c) in [
        ("ext4-gzip", None),
        ("ext4-zstd", Some("zstd")),
        ("ext4-none", Some("none")),
    ] {
        catalog.push_str(&image(
            name,
            "{ file: real-files.ext4 }",
            "containerdisk",
            c,
        ));
    }
    ws.write("images.yml", &catalog);
    let expected: String = PINNED
        .iter()
        .map(|(name, rest)| format!("{name} {rest}\n"))
        .collect();
    for threads in ["1", "2", "8"] {
        assert_eq!(build(&ws, &[("IMAGEPIPE_THREADS", threads)]), expected);
    }
}

#[test]
fn a_bad_thread_count_is_invalid_input() {
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n{}",
        image("d", "{ file: d.raw }", "containerdisk", None)
    ));
    ws.write("d.raw", vec![0u8; 4096]);
    for bad in ["0", "two", "-1"] {
        let mut c = ws.cmd();
        c.arg("build").env("IMAGEPIPE_THREADS", bad);
        let out = run(c);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("IMAGEPIPE_THREADS"), "{}", out.stderr);
    }
}

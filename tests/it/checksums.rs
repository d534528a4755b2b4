//! `url` sources pinned the ways upstream publishes them: SHA-256 or
//! SHA-512, in the catalog or in a GNU or BSD checksum file; each mistake
//! with its own message.

use crate::common::{FileServer, Workspace, run, sha512_hex};

fn catalog(source: &str) -> String {
    format!(
        "version: 1\nimages:\n  - name: debian-12\n    os: {{ distro: debian, version: \"12\" }}\n    source: {source}\n    format: containerdisk\n"
    )
}

fn build(ws: &Workspace) -> crate::common::Output {
    let mut c = ws.cmd();
    c.arg("build");
    run(c)
}

#[test]
fn sha512_sources_download_verify_and_build_the_same_image() {
    let server = FileServer::start();
    let disk = vec![7u8; 64 << 10];
    let url = server.put("/debian-12-generic-amd64.raw", disk.clone());
    let sums = server.put(
        "/SHA512SUMS",
        format!(
            "{}  debian-12-generic-arm64.raw\n{}  debian-12-generic-amd64.raw\n",
            "e".repeat(128),
            sha512_hex(&disk)
        ),
    );
    let mut digests = Vec::new();
    for source in [
        format!("{{ url: \"{url}\", sha512: \"{}\" }}", sha512_hex(&disk)),
        format!(
            "{{ url: \"{url}\", sha512: \"sha512:{}\" }}",
            sha512_hex(&disk).to_uppercase()
        ),
        format!("{{ url: \"{url}\", checksums_url: \"{sums}\" }}"),
    ] {
        let ws = Workspace::with_catalog(&catalog(&source));
        let out = build(&ws);
        assert_eq!(out.code, 0, "{source}: {}", out.stderr);
        digests.push(out.stdout.split_whitespace().nth(2).unwrap().to_owned());
        // Cached under its SHA-512, with the SHA-256 kept beside it.
        let cached = ws
            .path()
            .join(".imagepipe/cache/sha512")
            .join(sha512_hex(&disk));
        assert!(cached.is_file(), "{}", cached.display());
        // Again from the cache: the same image.
        std::fs::remove_dir_all(ws.path().join(".imagepipe/store")).unwrap();
        let again = build(&ws);
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert_eq!(again.stdout, out.stdout);
    }
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    // A wrong SHA-512: refused, named as such, nothing cached.
    let ws = Workspace::with_catalog(&catalog(&format!(
        "{{ url: \"{url}\", sha512: \"{}\" }}",
        "0".repeat(128)
    )));
    let out = build(&ws);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("expected sha512 0000"),
        "{}",
        out.stderr
    );
}

#[test]
fn each_checksum_mistake_has_its_own_message() {
    let server = FileServer::start();
    let url = "https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-generic-amd64.qcow2";
    for (source, said) in [
        (
            format!("{{ url: \"{url}\", sha256: \"{}\" }}", "a".repeat(128)),
            "128 hex characters is a sha512 checksum: write it under `sha512:`",
        ),
        (
            format!("{{ url: \"{url}\", sha512: \"{}\" }}", "a".repeat(64)),
            "64 hex characters is a sha256 checksum: write it under `sha256:`",
        ),
        (
            format!(
                "{{ url: \"{url}\", sha256: \"sha512:{}\" }}",
                "a".repeat(128)
            ),
            "`sha256` holds a `sha512:` checksum",
        ),
        (
            format!("{{ url: \"{url}\", sha256: \"{}\" }}", "a".repeat(63)),
            "must be 64 hexadecimal characters, not 63",
        ),
        (
            format!(
                "{{ url: \"{url}\", sha256: \"{}\", sha512: \"{}\" }}",
                "a".repeat(64),
                "b".repeat(128)
            ),
            "set one of `sha256`, `sha512` and `checksums_url`",
        ),
    ] {
        let ws = Workspace::with_catalog(&catalog(&source));
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{source}");
        assert!(out.stderr.contains(said), "{source}: {}", out.stderr);
    }
    // A checksum file that does not list the file, or lists it with junk.
    let listed = server.put("/SHA512SUMS", format!("{}  other.qcow2\n", "f".repeat(128)));
    let junk = server.put("/junk/SHA512SUMS", "xyz  disk.raw\n".to_owned());
    for (sums, said) in [
        (
            listed,
            "lists no checksum for `disk.raw` among its 1 entries",
        ),
        (junk, "neither a SHA-256 (64 hex) nor a SHA-512 (128 hex)"),
    ] {
        let ws = Workspace::with_catalog(&catalog(&format!(
            "{{ url: \"{}/disk.raw\", checksums_url: \"{sums}\" }}",
            server.base
        )));
        let mut c = ws.cmd();
        c.args(["plan"]);
        let out = run(c);
        assert_ne!(out.code, 0);
        assert!(out.stderr.contains(said), "{}", out.stderr);
    }
}

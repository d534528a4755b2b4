//! Inputs that misbehave outside the registry: credential helpers that
//! hang or flood, downloads that never end or are interrupted, and files
//! that are not what their place expects; each bounded, cleaned up, and
//! named for what it is.

use std::io::Write;
use std::net::TcpListener;

use crate::common::{Workspace, run};

#[test]
fn a_credential_helper_that_hangs_or_floods_is_bounded_and_named() {
    let reg = crate::registry_fixture::Registry::start_with_auth("ci", "secret");
    for (helper, script, said) in [
        ("hang", "#!/bin/sh\nexec sleep 3600\n", "did not answer"),
        (
            "flood",
            "#!/bin/sh\nexec yes '{\"Username\":\"ci\"}'\n",
            "printed more than 64 KiB",
        ),
    ] {
        let ws = Workspace::with_catalog(&format!(
            "version: 1\ntargets:\n  - {{ name: ci, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n",
            reg.addr
        ));
        ws.write("disk.raw", vec![0u8; 4096]);
        let bin = ws.path().join("bin");
        let program = ws.write(&format!("bin/docker-credential-{helper}"), script);
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        ws.write(
            ".docker/config.json",
            format!("{{\"credHelpers\": {{\"{}\": \"{helper}\"}}}}", reg.addr),
        );
        let mut c = ws.cmd();
        c.args(["publish"])
            .env("DOCKER_CONFIG", ws.path().join(".docker"))
            .env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            );
        let out = run(c);
        assert_eq!(out.code, 1, "{helper}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("docker-credential-{helper}"))
                && out.stderr.contains(said),
            "{helper}: {}",
            out.stderr
        );
    }
}

/// A download server whose body never ends (no length, 64 KiB every 10 ms),
/// or that announces `announce` bytes.
fn endless_server(announce: Option<u64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                crate::common::request_head(&stream);
                let mut s = stream;
                let length = announce.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
                if s.write_all(
                    format!("HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n").as_bytes(),
                )
                .is_err()
                {
                    return;
                }
                let chunk = vec![b'x'; 64 << 10];
                while s.write_all(&chunk).is_ok() {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            });
        }
    });
    addr
}

fn url_catalog(addr: &str, size: Option<&str>) -> String {
    let size = size.map_or(String::new(), |s| format!(", size: \"{s}\""));
    format!(
        "version: 1\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"http://{addr}/disk.raw\", sha256: \"{}\"{size} }}\n    format: containerdisk\n",
        "a".repeat(64)
    )
}

fn partials(ws: &Workspace) -> Vec<String> {
    std::fs::read_dir(ws.path().join(".imagepipe/cache/sha256"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".partial-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn downloads_are_bounded_and_leave_nothing_behind() {
    // An endless body stops at the declared size.
    let endless = endless_server(None);
    let ws = Workspace::with_catalog(&url_catalog(&endless, Some("1MiB")));
    // A partial left by a run that was killed is swept by the next one.
    ws.write(
        ".imagepipe/cache/sha256/.partial-4000000-dead",
        vec![0u8; 1000],
    );
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("longer than 1048576 bytes"),
        "{}",
        out.stderr
    );
    assert!(partials(&ws).is_empty(), "{:?}", partials(&ws));
    // A server announcing more than the declared size: nothing downloaded.
    let big = endless_server(Some(1 << 40));
    let ws = Workspace::with_catalog(&url_catalog(&big, Some("1MiB")));
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("announces 1099511627776 bytes"),
        "{}",
        out.stderr
    );
    // Without `size`, the default cap (64 GiB) bounds what is announced.
    let ws = Workspace::with_catalog(&url_catalog(&big, None));
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("declare `size:`"), "{}", out.stderr);
    // SIGTERM in the middle of a download removes the partial file.
    let ws = Workspace::with_catalog(&url_catalog(&endless, None));
    let mut child = ws
        .process()
        .arg("build")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while partials(&ws).is_empty() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    crate::common::sh("kill", &["-TERM", &child.id().to_string()], ws.path());
    assert_eq!(child.wait().unwrap().code(), Some(143));
    assert!(partials(&ws).is_empty(), "{:?}", partials(&ws));
}

/// Each of these says what it is, not something else.
#[test]
fn messages_name_what_is_wrong() {
    // `--authfile` naming a FIFO, a device, a directory.
    let ws = Workspace::with_catalog(
        "version: 1\ntargets:\n  - { name: r, registry: \"127.0.0.1:1\", namespace: ci, insecure: true }\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.raw }\n    format: containerdisk\n",
    );
    let fifo = ws.path().join("auth.fifo");
    crate::common::sh("mkfifo", &[fifo.to_str().unwrap()], ws.path());
    for (file, said) in [
        (fifo.to_str().unwrap(), "is not a regular file"),
        ("/dev/zero", "is not a regular file"),
        (ws.path().to_str().unwrap(), "is a directory"),
        ("missing.json", "no such file"),
    ] {
        let mut c = ws.cmd();
        c.args(["plan", "--authfile", file]);
        let out = run(c);
        assert_eq!(out.code, 2, "{file}: {}", out.stderr);
        assert!(out.stderr.contains(said), "{file}: {}", out.stderr);
    }
    // A NUL byte in the catalog is not a tab.
    let ws = Workspace::with_catalog("version: 1\nimages:\n  - name: a\u{0}b\n");
    let mut c = ws.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("U+0000") && !out.stderr.contains("tabs"),
        "{}",
        out.stderr
    );

    // Retention: a `paths` file that is a symlink, and thousands of
    // unsupported release branches.
    let reg = crate::registry_fixture::Registry::start();
    let rules = "  keep_last: 1\n  git:\n    repo: k8s-ci\n    branches: [\"release-*\"]\n    supported_releases: 2\n    paths: [\"tests/**/*.yml\"]\n";
    let ws = Workspace::with_catalog(&crate::cleanup::catalog(&reg.addr, rules));
    ws.write("disk.raw", vec![1u8; 4096]);
    let branches: Vec<(String, String)> =
        std::iter::once(("main".to_owned(), "main: 0\n".to_owned()))
            .chain((1..=15).map(|n| (format!("release-2.{n}"), format!("x: {n}\n"))))
            .collect();
    let refs: Vec<(&str, &str)> = branches
        .iter()
        .map(|(b, c)| (b.as_str(), c.as_str()))
        .collect();
    crate::cleanup::git_repo(&ws, &refs);
    let (code, _, stderr) = crate::cleanup::cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    let mut c = ws.cmd();
    c.arg("cleanup");
    let out = run(c);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("release branches past supported_releases"))
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(
        line.ends_with("and 3 more (all in --format json)"),
        "{line}"
    );
    assert_eq!(line.matches("release-2.").count(), 10, "{line}");
    let repo = ws.path().join("k8s-ci");
    std::fs::remove_file(repo.join("tests/ci.yml")).unwrap();
    std::fs::write(repo.join("refs.txt"), "x: 1\n").unwrap();
    std::os::unix::fs::symlink("../refs.txt", repo.join("tests/ci.yml")).unwrap();
    crate::common::git(&repo, &["add", "-A"]);
    crate::common::git(&repo, &["commit", "-q", "-m", "link"]);
    let (code, _, stderr) = crate::cleanup::cleanup(&ws, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("matches only symbolic links")
            && stderr.contains("tests/ci.yml → ../refs.txt"),
        "{stderr}"
    );
}

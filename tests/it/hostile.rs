//! Hostile registries: credentials go only to the origin they were given
//! for — not to an upload `Location` or a tag-list `Link` on another host,
//! and a password never to a plain-HTTP token realm elsewhere.

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::common::{Workspace, qcow2, run};
use crate::fault_proxy::{Fault, FaultProxy};
use crate::registry_fixture::Registry;

/// A server on another port that logs the `Authorization` of every request
/// it receives and answers `status`.
struct Witness {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Witness {
    fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (first, headers) = crate::common::request_head(&stream);
                let auth = headers
                    .iter()
                    .rfind(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .map_or_else(|| "none".to_owned(), |l| l.trim().to_owned());
                log.lock().unwrap().push(format!("{} {auth}", first.trim()));
                let mut s = stream;
                let _ = s.write_all(
                    format!("HTTP/1.1 {status} Witness\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
            }
        });
        Self { addr, seen }
    }
}

fn docker_config(ws: &Workspace, host: &str, user: &str, password: &str) {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    ws.write(
        ".docker/config.json",
        format!("{{\"auths\": {{\"{host}\": {{\"auth\": \"{auth}\"}}}}}}"),
    );
}

#[test]
fn credentials_never_follow_a_location_or_link_to_another_host() {
    let reg = Registry::start_with_auth("alice", "s3cret-pass");
    let witness = Witness::start(404);
    // The registry (through a proxy) sends uploads and the next tag page elsewhere.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![
            Fault::Respond {
                method: "POST",
                path: "/blobs/uploads/",
                status: 202,
                headers: format!(
                    "Location: http://{}/v2/ci/disk/blobs/uploads/x\r\n",
                    witness.addr
                ),
                body: Vec::new(),
                times: 50,
                authorized: true,
            },
            Fault::Respond {
                method: "GET",
                path: "/tags/list",
                status: 200,
                headers: format!(
                    "Link: <http://{}/v2/ci/disk/tags/list?last=a>; rel=\"next\"\r\n",
                    witness.addr
                ),
                body: "{\"name\":\"ci/disk\",\"tags\":[\"a\"]}".into(),
                times: 50,
                authorized: true,
            },
        ],
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\nretention:\n  keep_last: 1\n",
        proxy.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    docker_config(&ws, &proxy.addr, "alice", "s3cret-pass");
    let mut c = ws.cmd();
    c.args(["publish"])
        .env("DOCKER_CONFIG", ws.path().join(".docker"))
        .env("IMAGEPIPE_LOG", "warn");
    let out = run(c);
    assert_eq!(out.code, 1, "the upload cannot succeed: {}", out.stderr);
    let mut c = ws.cmd();
    c.args(["cleanup"])
        .env("DOCKER_CONFIG", ws.path().join(".docker"));
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("another host"), "{}", out.stderr);
    let seen = witness.seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the upload went to the other host");
    for line in &seen {
        assert!(line.ends_with(" none"), "credentials leaked: {line}");
    }
    // The registry itself did get them (so they were in play).
    assert!(!out.stderr.contains("s3cret-pass"));
}

#[test]
fn a_password_never_goes_to_a_plain_http_token_realm_on_another_host() {
    let witness = Witness::start(401);
    // A "registry" that challenges with a Bearer realm on another host, over HTTP.
    let realm = format!(
        "http://localhost:{}/token",
        witness.addr.rsplit(':').next().unwrap()
    );
    let addr = canned_registry(
        format!("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"{realm}\",service=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes(),
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{addr}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n"
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    docker_config(&ws, &addr, "alice", "s3cret-pass");
    let mut c = ws.cmd();
    c.args(["publish"])
        .env("DOCKER_CONFIG", ws.path().join(".docker"));
    let out = run(c);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("password is not sent"),
        "{}",
        out.stderr
    );
    assert!(
        witness.seen.lock().unwrap().is_empty(),
        "the realm was never contacted with the password"
    );
}

/// A FIFO (or device, or socket) as a `file:` source is refused at once,
/// instead of blocking the build forever.
#[test]
fn a_fifo_source_is_refused_at_once() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.raw }\n    format: containerdisk\n",
    );
    crate::common::sh("mkfifo", &["disk.raw"], ws.path());
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
}

/// Temporary files of a run killed mid-write live outside `blobs/sha256`
/// and are removed by the next run; OCI tools keep working.
#[test]
fn leftovers_of_a_killed_run_are_swept() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n",
    );
    qcow2(&ws, "disk.qcow2", "4M");
    let build = || {
        let mut c = ws.cmd();
        c.arg("build");
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
    };
    build();
    let layout = ws.path().join(".imagepipe/store/disk");
    // What a SIGKILL leaves: a half-written blob of a process that is gone,
    // and one from an older version inside blobs/sha256.
    let dead = layout.join(".imagepipe-tmp/blob-4000000-0");
    std::fs::write(&dead, vec![0u8; 1024]).unwrap();
    let legacy = layout.join("blobs/sha256/.tmp-blob-4000000-1");
    std::fs::write(&legacy, b"x").unwrap();
    std::fs::write(ws.path().join("disk.qcow2"), b"").unwrap();
    qcow2(&ws, "disk.qcow2", "6M");
    build();
    assert!(!dead.exists() && !legacy.exists());
    crate::common::sh(
        "umoci",
        &["gc", "--layout", layout.to_str().unwrap()],
        ws.path(),
    );
}

/// A server that answers with headers and then stops, or trickles a byte at
/// a time: `IMAGEPIPE_READ_TIMEOUT` bounds every read and the rate, so the
/// run ends with an error instead of waiting forever.
fn stalling_server(trickle: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let (first, _) = crate::common::request_head(&stream);
                let mut s = stream;
                if first.contains("/tags/list") {
                    let body = "{\"name\":\"ci/disk\",\"tags\":[\"t\"]}";
                    let _ = s.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes());
                    return;
                }
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 100000\r\n\r\n{");
                for _ in 0..60 {
                    std::thread::sleep(std::time::Duration::from_millis(500));
                    if trickle && s.write_all(b" ").is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn a_body_that_stops_or_trickles_ends_the_run() {
    // A manifest body that stops after one byte (cleanup reads it).
    let addr = stalling_server(false);
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{addr}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\nretention:\n  keep_last: 1\n"
    ));
    let mut c = ws.cmd();
    c.arg("cleanup")
        .env("IMAGEPIPE_READ_TIMEOUT", "2")
        .env("IMAGEPIPE_RETRIES", "1");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("timed out") || out.stderr.contains("timeout"),
        "{}",
        out.stderr
    );
    // A download trickling a byte every half second.
    let addr = stalling_server(true);
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"http://{addr}/disk.qcow2\", sha256: \"{}\" }}\n    format: containerdisk\n",
        "a".repeat(64)
    ));
    let mut c = ws.cmd();
    c.arg("build").env("IMAGEPIPE_READ_TIMEOUT", "2");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("stalled"), "{}", out.stderr);
}

/// SIGTERM (and SIGINT) stop a build cleanly: the builder is stopped, the
/// scratch directory with its disk copy is removed, and the exit code is
/// 143 (130).
#[test]
fn signals_stop_a_build_cleanly() {
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let ws = Workspace::with_catalog(
            "version: 1\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { command: { run: [./slow.sh] } }\n    format: containerdisk\n",
        );
        let script = ws.write(
            "slow.sh",
            "#!/bin/sh\necho $$ > \"$IMAGEPIPE_OUTPUT_DIR/../builder.pid\"\nhead -c 1048576 /dev/zero > \"$IMAGEPIPE_OUTPUT_DIR/disk.raw\"\nsleep 60\n",
        );
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("imagepipe"))
            .arg("build")
            .current_dir(ws.path())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let work = ws.path().join(".imagepipe/work");
        let pid_file = || {
            std::fs::read_dir(&work)
                .ok()?
                .flatten()
                .map(|e| e.path().join("builder.pid"))
                .find(|p| p.is_file())
        };
        let started = std::time::Instant::now();
        let pid_path = loop {
            if let Some(p) = pid_file().filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
            {
                break p;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "the builder never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let builder: u32 = std::fs::read_to_string(&pid_path)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        crate::common::sh(
            "kill",
            &[&format!("-{signal}"), &child.id().to_string()],
            ws.path(),
        );
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "SIG{signal}");
        let left: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "scratch left behind: {left:?}");
        // The builder was stopped too (give the kernel a moment to reap it).
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::read_to_string(format!("/proc/{builder}/stat"))
                .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
        });
        assert!(gone, "the builder {builder} still runs");
    }
}

/// A registry whose every answer is `response` (headers and body as sent).
fn canned_registry(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let response = response.clone();
            std::thread::spawn(move || {
                crate::common::request_head(&stream);
                let mut s = stream;
                let _ = s.write_all(&response);
            });
        }
    });
    addr
}

/// What hostile or broken registries send — bad manifests and indexes,
/// token responses, `WWW-Authenticate` and `Link` headers, random bytes —
/// ends a run with a named error (exit 1), never a panic or a hang.
#[test]
fn whatever_a_registry_sends_is_an_error_never_a_panic() {
    let close = "Connection: close\r\n";
    let mut corpus: Vec<Vec<u8>> = [
        format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 15\r\n\r\n{{\"tags\": [1,2]}}"),
        format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 12\r\n\r\n{{\"tags\":{{}}}}"),
        format!("HTTP/1.1 200 OK\r\n{close}Link: <<<>>>; rel=next\r\nContent-Length: 20\r\n\r\n{{\"tags\":[\"a\",\"b\"]}}"),
        format!("HTTP/1.1 401 No\r\n{close}WWW-Authenticate: Bearer realm=\r\nContent-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 401 No\r\n{close}WWW-Authenticate: Bearer realm=\"http://127.0.0.1:1/t\",service=\"\u{1}\"\r\nContent-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 401 No\r\n{close}WWW-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n"),
        format!("HTTP/1.1 200 OK\r\n{close}Docker-Content-Digest: sha256:zz\r\nContent-Length: 2\r\n\r\n{{}}"),
        format!("HTTP/1.1 200 OK\r\n{close}Content-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: 45\r\n\r\n{{\"manifests\":[{{\"digest\":\"x\",\"size\":-1}}]}}"),
        format!("HTTP/1.1 200 OK\r\n{close}Content-Length: 999999999999\r\n\r\n{{"),
        format!("HTTP/1.1 999 ???\r\n{close}\r\n"),
        "not http at all\r\n\r\n".to_owned(),
        String::new(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect();
    // And a few kilobytes of noise after a valid status line.
    let mut seed: u32 = 0x9e37_79b9;
    for _ in 0..4 {
        let mut noise = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..4096 {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            noise.push((seed & 0xff) as u8);
        }
        corpus.push(noise);
    }
    for (i, response) in corpus.into_iter().enumerate() {
        let addr = canned_registry(response);
        let ws = Workspace::with_catalog(&format!(
            "version: 1\ntargets:\n  - {{ name: r, registry: \"{addr}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\nretention:\n  keep_last: 1\n"
        ));
        qcow2(&ws, "disk.qcow2", "1M");
        docker_config(&ws, &addr, "alice", "s3cret-pass");
        for args in [&["cleanup", "--apply"][..], &["publish"][..]] {
            let mut c = ws.cmd();
            c.args(args)
                .env("DOCKER_CONFIG", ws.path().join(".docker"))
                .env("IMAGEPIPE_RETRIES", "1")
                .env("IMAGEPIPE_READ_TIMEOUT", "2");
            let out = run(c);
            assert!(
                out.code == 1 || out.code == 0,
                "case {i} {args:?}: exit {}: {}",
                out.code,
                out.stderr
            );
            assert!(!out.stderr.contains("panicked"), "case {i}: {}", out.stderr);
            assert!(
                !out.stderr.contains("s3cret-pass"),
                "case {i}: {}",
                out.stderr
            );
        }
    }
}

/// A download redirected to `file://` is refused, and the error says so.
#[test]
fn a_redirect_to_a_file_url_is_named() {
    let addr = canned_registry(
        b"HTTP/1.1 302 Found\r\nLocation: file:///etc/passwd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec(),
    );
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"http://{addr}/disk.qcow2\", sha256: \"{}\" }}\n    format: containerdisk\n",
        "a".repeat(64)
    ));
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("redirected to `file:///etc/passwd`"),
        "{}",
        out.stderr
    );
}

/// A store on a full disk: every compression ends with an error naming the
/// full disk, never a panic, and leaves no partial blob behind.
#[test]
fn a_full_disk_is_an_error_with_every_compression() {
    let ws = Workspace::new();
    let mnt = ws.path().join("full");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..16 << 20)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect();
    ws.write("disk.raw", &noise);
    for compression in ["gzip", "gzip:1", "zstd", "none"] {
        ws.write(
            "images.yml",
            format!("version: 1\ntargets:\n  - {{ name: local, layout: ./full }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n    compression: {compression}\n"),
        );
        let mut c = ws.cmd();
        c.arg("build");
        let out = run(c);
        assert_eq!(out.code, 1, "{compression}: {}", out.stderr);
        assert!(
            out.stderr.contains("No space left"),
            "{compression}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("panicked"),
            "{compression}: {}",
            out.stderr
        );
        let blobs = mnt.join("disk/blobs/sha256");
        for e in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).unwrap();
            assert_eq!(
                crate::common::sha256_hex(&bytes),
                name,
                "{compression}: a partial blob is left"
            );
        }
        let tmp = mnt.join("disk/.imagepipe-tmp");
        assert_eq!(
            std::fs::read_dir(&tmp).map_or(0, |d| d.count()),
            0,
            "{compression}: temp files left"
        );
    }
}

//! Helpers: run the real binary in a temp dir, serve files over loopback HTTP.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use assert_cmd::Command;

/// A scratch directory holding a catalog and whatever files a test adds.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn with_catalog(text: &str) -> Self {
        let ws = Self::new();
        ws.write("images.yml", text);
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// `imagepipe` run in this directory with a clean environment: nothing
    /// of the machine's CI, registry credentials, home directory or
    /// imagepipe settings reaches it (tests set what they need after this).
    pub fn cmd(&self) -> Command {
        Command::from_std(self.process())
    }

    /// [`Self::cmd`] as a process to spawn (signals, concurrent runs).
    pub fn process(&self) -> std::process::Command {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("imagepipe"));
        self.clean_env(&mut c);
        c
    }

    /// The clean environment of [`Self::cmd`] on any command (a wrapper
    /// such as `taskset` that runs imagepipe), started in this directory.
    pub fn clean_env(&self, c: &mut std::process::Command) {
        c.current_dir(self.path());
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            if ["GITHUB_", "CI_", "IMAGEPIPE_", "RUNNER_"]
                .iter()
                .any(|p| name.starts_with(p))
            {
                c.env_remove(&var);
            }
        }
        c.env("HOME", self.path().join(".home"));
        for var in [
            "CI",
            "DOCKER_CONFIG",
            "DOCKER_AUTH_CONFIG",
            "REGISTRY_AUTH_FILE",
            "XDG_RUNTIME_DIR",
            "CI_COMMIT_TAG",
            "GITHUB_REF_NAME",
            "GITHUB_REF_TYPE",
            "GITHUB_ACTIONS",
            "CI_DEFAULT_BRANCH",
            "CI_COMMIT_SHA",
            "GITHUB_SHA",
            "CI_PIPELINE_ID",
            "GITHUB_RUN_ID",
            "SOURCE_DATE_EPOCH",
            "RUNC_VERSION",
            "CONTAINERD_VERSION",
        ] {
            c.env_remove(var);
        }
    }
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(mut cmd: Command) -> Output {
    let out = cmd.output().unwrap();
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A static HTTP server on 127.0.0.1 (random port) for download tests.
/// Stops when dropped.
pub struct FileServer {
    pub base: String,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    redirects: Arc<Mutex<HashMap<String, String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    addr: std::net::SocketAddr,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FileServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let redirects: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, r, s) = (files.clone(), redirects.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let body = f.lock().unwrap().get(&path).cloned();
                if let Some(to) = r.lock().unwrap().get(&path) {
                    let _ = stream.write_all(format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
                    continue;
                }
                let _ = match body {
                    // A "truncated" file announces more bytes than it sends, then hangs up.
                    Some(b) if path.ends_with(".truncated") => stream
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len() * 2).as_bytes())
                        .and_then(|()| stream.write_all(&b)),
                    Some(b) => stream
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", b.len()).as_bytes())
                        .and_then(|()| stream.write_all(&b)),
                    None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                };
            }
        });
        Self {
            base: format!("http://{addr}"),
            files,
            redirects,
            stop,
            addr,
            handle: Some(handle),
        }
    }

    pub fn put(&self, path: &str, body: impl Into<Vec<u8>>) -> String {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.into());
        format!("{}{path}", self.base)
    }

    /// `path` answers `404 Not Found` from now on.
    pub fn remove(&self, path: &str) {
        self.files.lock().unwrap().remove(path);
    }

    /// `path` answers `302 Found` to `to` (a path on this server).
    pub fn redirect(&self, path: &str, to: &str) {
        self.redirects
            .lock()
            .unwrap()
            .insert(path.to_owned(), to.to_owned());
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The binary under test without its debug info (a tenth of the size), at `dest`:
/// for tests that package or copy it.
pub fn stripped_binary(dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let bin = assert_cmd::cargo::cargo_bin("imagepipe");
    sh(
        "strip",
        &["-o", dest.to_str().unwrap(), bin.to_str().unwrap()],
        Path::new("/"),
    );
    dest.to_path_buf()
}

/// `umoci unpack` of `<layout>:<tag>` into `dir/bundle`; returns the bundle.
pub fn umoci_unpack(layout: &Path, tag: &str, dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let image = format!("{}:{tag}", layout.display());
    sh(
        "umoci",
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
        dir,
    );
    bundle
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    imagepipe::recipe::sha256_hex(bytes)
}

pub fn sha512_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    imagepipe::oci::hash::hex(&sha2::Sha512::digest(bytes))
}

pub const SHA_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A small valid catalog: one url image, one release image, two targets.
pub fn basic_catalog() -> String {
    format!(
        r#"version: 1
variables:
  runc:       {{ default: "1.2.6", env: RUNC_VERSION }}
  containerd: {{ default: "2.0.4", env: CONTAINERD_VERSION }}
targets:
  - name: local
    layout: ./.imagepipe/store
  - name: dev
    registry: 127.0.0.1:5999
    namespace: ci
    insecure: true
images:
  - name: ubuntu-2204
    os: {{ distro: ubuntu, version: "22.04" }}
    source:
      url: https://cloud-images.example.com/jammy/ubuntu-22.04-server-cloudimg-amd64.img
      sha256: "{SHA_A}"
    format: containerdisk
  - name: node-ubuntu-2404
    os: {{ distro: ubuntu, version: "24.04" }}
    kubernetes: true
    source:
      url: https://cloud-images.example.com/noble/ubuntu-24.04-server-cloudimg-amd64.img
      sha256: "{SHA_A}"
    format: containerdisk
    tags: ["{{name}}-{{kubernetes}}-{{hash}}", "{{kubernetes_series}}-latest"]
"#
    )
}

/// Reads an HTTP request's head from `stream`: its first line, and its
/// header lines (as sent, with their line ends), up to the blank line.
pub fn request_head(stream: &std::net::TcpStream) -> (String, Vec<String>) {
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    let _ = reader.read_line(&mut first);
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        headers.push(line);
    }
    (first, headers)
}

/// Runs a program, panicking with its stderr when it fails; returns stdout.
pub fn sh(program: &str, args: &[&str], dir: &Path) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs git in `dir` with a fixed identity and `main` as the first branch.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small qcow2 disk made by qemu-img.
pub fn qcow2(ws: &Workspace, rel: &str, size: &str) -> PathBuf {
    let p = ws.path().join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", p.to_str().unwrap(), size],
        ws.path(),
    );
    p
}

/// `skopeo inspect --raw` of `oci:<layout>:<tag>`, parsed.
pub fn skopeo_raw(layout: &Path, tag: &str) -> serde_json::Value {
    let out = sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", layout.display()),
        ],
        Path::new("."),
    );
    serde_json::from_str(&out).unwrap()
}

/// Slow checks (network, minutes) run only when IMAGEPIPE_SLOW_TESTS=1; `.ci/run` sets it.
pub fn slow_tests_enabled() -> bool {
    std::env::var("IMAGEPIPE_SLOW_TESTS").is_ok_and(|v| v == "1")
}

/// The first item's `key` in a command's `--format json` output.
pub fn first_item(stdout: &str, key: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    v["items"][0][key]
        .as_str()
        .unwrap_or_else(|| panic!("no items[0].{key} in {stdout}"))
        .to_owned()
}

/// The image tags of `<registry>/<repo>` as skopeo lists them, sorted, without
/// the `sha256-…` referrers tags of attestations; none when the repository
/// does not exist.
pub fn image_tags(registry: &str, repo: &str) -> Vec<String> {
    let out = std::process::Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{registry}/{repo}"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut t: Vec<String> = v["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .filter(|t| !t.starts_with("sha256-"))
        .collect();
    t.sort();
    t
}

/// Pulls `docker://<registry>/<reference>` in full with skopeo (an independent client).
pub fn skopeo_pull(ws: &Workspace, registry: &str, reference: &str) {
    let dir = ws
        .path()
        .join("pulled")
        .join(reference.replace(['/', ':', '@'], "_"));
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{registry}/{reference}"),
            &format!("oci:{}:x", dir.display()),
        ],
        ws.path(),
    );
}

/// The committed real ext4 image (4 MiB: license texts, an HTML manual,
/// four ELF binaries, gzip changelogs; see tests/fixtures/README.md).
pub fn ext4_fixture() -> Vec<u8> {
    let xz = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/real-files.ext4.xz"),
    )
    .unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(&xz[..]), &mut out).unwrap();
    out
}

/// The item of `target` in a plan's or publish's JSON output.
pub fn item_for(v: &serde_json::Value, target: &str) -> serde_json::Value {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == target)
        .unwrap_or_else(|| panic!("no item for {target}: {v}"))
        .clone()
}

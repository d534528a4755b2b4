//! A real CNCF Distribution registry (Debian's `docker-registry`) on
//! 127.0.0.1 and a random free port, with its own storage; stopped on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Registry {
    pub addr: String,
    _dir: tempfile::TempDir,
    child: Child,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Plain HTTP, delete enabled.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// With htpasswd basic auth for `user`/`password` (bcrypt via `htpasswd -B`).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        Self::start_with(Some((user, password)))
    }

    /// Over TLS with a self-signed certificate made the usual way
    /// (`openssl req -x509`, which marks it `CA:TRUE`); returns its PEM path.
    pub fn start_tls_self_signed() -> (Self, std::path::PathBuf) {
        let certs = tempfile::tempdir().unwrap();
        let d = certs.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                "server.key",
                "-out",
                "server.crt",
            ],
        );
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in", "server.crt"])
            .current_dir(d)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("CA:TRUE"),
            "the case under test: a self-signed certificate that says it is a CA"
        );
        Self::serve_tls(d, "server.crt")
    }

    /// Over TLS with a certificate from a throwaway CA; returns the CA's PEM path.
    pub fn start_tls() -> (Self, std::path::PathBuf) {
        let certs = tempfile::tempdir().unwrap();
        let d = certs.path();
        let run = |args: &[&str]| openssl(d, args);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=imagepipe test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ]);
        Self::serve_tls(d, "ca.crt")
    }

    /// Serves `d/server.crt` and `d/server.key`; returns the registry and
    /// its copy of `d/<trust>`, the file a client is given to trust it.
    fn serve_tls(d: &std::path::Path, trust: &str) -> (Self, std::path::PathBuf) {
        let tls = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            d.join("server.crt").display(),
            d.join("server.key").display()
        );
        let reg = Self::start_full(None, &tls);
        let kept = reg._dir.path().join(trust);
        std::fs::copy(d.join(trust), &kept).unwrap();
        (reg, kept)
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        Self::start_full(auth, "")
    }

    fn start_full(auth: Option<(&str, &str)>, tls: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut auth_cfg = String::new();
        if let Some((user, password)) = auth {
            let htpasswd = dir.path().join("htpasswd");
            let ok = Command::new("htpasswd")
                .args(["-Bbc", htpasswd.to_str().unwrap(), user, password])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("htpasswd (apache2-utils) is installed");
            assert!(ok.success());
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth_cfg}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = spawn(&config, dir.path());
        let r = Self {
            addr,
            _dir: dir,
            child,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("registry on {} did not start", self.addr);
    }
}

impl Registry {
    /// Stops the registry, runs its offline garbage collector (removing
    /// untagged manifests), starts it again.
    pub fn garbage_collect(&mut self) {
        self.collect(true);
    }

    /// Garbage collection that keeps untagged manifests: Distribution 2.x's
    /// `--delete-untagged` also removes the children of multi-arch indexes
    /// (distribution/distribution#3178), whatever keeps the index.
    pub fn garbage_collect_keeping_untagged(&mut self) {
        self.collect(false);
    }

    fn collect(&mut self, delete_untagged: bool) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let config = self._dir.path().join("config.yml");
        let mut args = vec!["garbage-collect"];
        if delete_untagged {
            args.push("--delete-untagged");
        }
        let out = Command::new(binary())
            .args(&args)
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.child = spawn(&config, self._dir.path());
        self.wait_ready();
    }

    /// The registry's own access log: one line per request it served.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("access.log")).unwrap_or_default()
    }

    /// Bytes of the largest upload in progress in `repo` (0 when none).
    pub fn upload_in_progress(&self, repo: &str) -> u64 {
        let uploads = self
            ._dir
            .path()
            .join("data/docker/registry/v2/repositories")
            .join(repo)
            .join("_uploads");
        std::fs::read_dir(uploads)
            .into_iter()
            .flatten()
            .filter_map(|e| std::fs::metadata(e.ok()?.path().join("data")).ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0)
    }

    /// Kills the registry and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = spawn(&self._dir.path().join("config.yml"), self._dir.path());
        self.wait_ready();
    }
}

fn binary() -> &'static str {
    if Path::new("/usr/bin/docker-registry").exists() {
        "/usr/bin/docker-registry"
    } else {
        "registry"
    }
}

fn spawn(config: &Path, dir: &Path) -> Child {
    // Distribution writes its access log (one line per request) to stdout.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("access.log"))
        .unwrap();
    Command::new(binary())
        .arg("serve")
        .arg(config)
        .current_dir(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry is installed")
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `openssl args` in `d`, which must succeed.
fn openssl(d: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

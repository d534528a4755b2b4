//! Credentials: where they come from (a keychain over Docker's and podman's
//! files and credential helpers) and a type that never prints them.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use crate::env::{DOCKER_CONFIG, Environment, REGISTRY_AUTH_FILE};

/// A secret value: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The value, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What a registry host is accessed with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// An OAuth2 refresh token (Docker's `identitytoken`), exchanged at the token endpoint.
    IdentityToken(Secret),
}

/// Resolves credentials per registry host.
#[derive(Clone, Debug, Default)]
pub struct Keychain {
    /// `--creds`: used for every registry, before any file.
    over: Option<Credential>,
    /// `DOCKER_AUTH_CONFIG`: a config.json given inline (GitLab CI's convention).
    inline: Option<String>,
    files: Vec<PathBuf>,
}

impl Keychain {
    /// The files, in order: `REGISTRY_AUTH_FILE`, Docker's `config.json`
    /// (`DOCKER_CONFIG` or `~/.docker`), podman's `$XDG_RUNTIME_DIR/containers/auth.json`.
    pub fn from_env(env: &Environment) -> Self {
        let mut files = Vec::new();
        if let Some(f) = env.get(REGISTRY_AUTH_FILE) {
            files.push(PathBuf::from(f));
        }
        match env.get(DOCKER_CONFIG) {
            Some(d) => files.push(Path::new(d).join("config.json")),
            None => {
                if let Some(home) = env.get("HOME") {
                    files.push(Path::new(home).join(".docker/config.json"));
                }
            }
        }
        if let Some(run) = env.get("XDG_RUNTIME_DIR") {
            files.push(Path::new(run).join("containers/auth.json"));
        }
        Self {
            over: None,
            inline: env.get(crate::env::DOCKER_AUTH_CONFIG).map(str::to_owned),
            files,
        }
    }

    pub fn from_files(files: Vec<PathBuf>) -> Self {
        Self {
            over: None,
            inline: None,
            files,
        }
    }

    /// `--authfile`: read this file before any other.
    #[must_use]
    pub fn with_first_file(mut self, file: PathBuf) -> Self {
        self.files.insert(0, file);
        self
    }

    /// `--creds`: this credential for every registry.
    #[must_use]
    pub fn with_override(mut self, c: Credential) -> Self {
        self.over = Some(c);
        self
    }

    /// Whether every host gets the one credential of `--creds`.
    pub fn overridden(&self) -> bool {
        self.over.is_some()
    }

    /// The credential for `host` (`host[:port]`); anonymous when none is configured.
    pub fn resolve(&self, host: &str) -> Result<Credential, String> {
        if let Some(c) = &self.over {
            return Ok(c.clone());
        }
        let inline = self.inline.as_ref().map(|t| {
            (
                PathBuf::from(crate::env::DOCKER_AUTH_CONFIG),
                t.clone().into_bytes(),
            )
        });
        let files = self
            .files
            .iter()
            .filter_map(|f| read_auth_file(f).map(|b| (f.clone(), b)));
        for (file, bytes) in inline.into_iter().chain(files) {
            let file = file.as_path();
            let config: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not valid JSON: {e}", file.display()))?;
            if let Some(helper) = config["credHelpers"].get(host).and_then(|h| h.as_str()) {
                return helper_get(helper, host);
            }
            if let Some(entry) = lookup(&config["auths"], host)
                && let Some(c) = from_entry(entry, file)?
            {
                return Ok(c);
            }
            if let Some(store) = config["credsStore"].as_str() {
                match helper_get(store, host) {
                    Ok(Credential::Anonymous) | Err(_) => {}
                    Ok(c) => return Ok(c),
                }
            }
        }
        Ok(Credential::Anonymous)
    }
}

/// An auth file's bytes: regular files only (a FIFO would block, a device
/// never end), at most 1 MiB.
fn read_auth_file(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read as _;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(1 << 20).read_to_end(&mut bytes))
        .ok()?;
    Some(bytes)
}

fn lookup<'a>(auths: &'a serde_json::Value, host: &str) -> Option<&'a serde_json::Value> {
    let map = auths.as_object()?;
    let mut keys = vec![
        host.to_owned(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" || host == "registry-1.docker.io" {
        keys.push("https://index.docker.io/v1/".into());
    }
    keys.iter()
        .find_map(|k| map.get(k).or_else(|| map.get(&format!("{k}/"))))
}

fn from_entry(entry: &serde_json::Value, file: &Path) -> Result<Option<Credential>, String> {
    if let Some(t) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(Secret::new(t))));
    }
    if let Some(a) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                format!(
                    "{}: an `auth` entry is not base64 of `user:password`",
                    file.display()
                )
            })?;
        let (user, pass) = decoded.split_once(':').ok_or_else(|| {
            format!(
                "{}: an `auth` entry is not base64 of `user:password`",
                file.display()
            )
        })?;
        return Ok(Some(Credential::Basic {
            username: user.to_owned(),
            password: Secret::new(pass),
        }));
    }
    if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
        return Ok(Some(Credential::Basic {
            username: u.to_owned(),
            password: Secret::new(p),
        }));
    }
    Ok(None)
}

/// How long a credential helper may take, and how much it may print.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const HELPER_OUTPUT_CAP: u64 = 64 << 10;

/// Reads at most [`HELPER_OUTPUT_CAP`] + 1 bytes of `r` on a thread.
fn read_capped(r: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut r.take(HELPER_OUTPUT_CAP + 1), &mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `docker-credential-<helper> get` with the host on stdin, for at
/// most [`HELPER_TIMEOUT`], reading at most [`HELPER_OUTPUT_CAP`] of what it prints.
fn helper_get(helper: &str, host: &str) -> Result<Credential, String> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let stdout = read_capped(child.stdout.take().ok_or("no stdout")?);
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < HELPER_TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "credential helper {program} did not answer for {host} within {}s: it was stopped (check it by hand: `echo {host} | {program} get`)",
                    HELPER_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("credential helper {program}: {e}")),
        }
    };
    let stdout = stdout
        .recv_timeout(std::time::Duration::from_secs(5))
        .map_err(|_| format!("credential helper {program}: its output did not end"))?;
    if stdout.len() as u64 > HELPER_OUTPUT_CAP {
        return Err(format!(
            "credential helper {program} printed more than {} KiB for {host}: that is not a credential (check it by hand: `echo {host} | {program} get`)",
            HELPER_OUTPUT_CAP >> 10
        ));
    }
    let out = std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    };
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout);
        if msg.contains("credentials not found") {
            return Ok(Credential::Anonymous);
        }
        return Err(format!(
            "credential helper {program} failed for {host} ({})",
            out.status
        ));
    }
    let v: BTreeMap<String, String> = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {program} returned unreadable output"))?;
    let user = v.get("Username").cloned().unwrap_or_default();
    let secret = v.get("Secret").cloned().unwrap_or_default();
    Ok(if user == "<token>" {
        Credential::IdentityToken(Secret::new(secret))
    } else if secret.is_empty() {
        Credential::Anonymous
    } else {
        Credential::Basic {
            username: user,
            password: Secret::new(secret),
        }
    })
}

/// `Basic base64(user:password)`.
pub fn basic_header(username: &str, password: &Secret) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(Secret::new("x").to_string(), "***");
    }

    #[test]
    fn docker_config_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("config.json");
        std::fs::write(
            &f,
            r#"{"auths":{"r.example.com":{"auth":"dTpwOnc="},"https://s.example.com":{"identitytoken":"tok"},"t.example.com":{"username":"a","password":"b"}}}"#,
        )
        .unwrap();
        let k = Keychain::from_files(vec![f]);
        assert_eq!(
            k.resolve("r.example.com").unwrap(),
            Credential::Basic {
                username: "u".into(),
                password: Secret::new("p:w")
            }
        );
        assert_eq!(
            k.resolve("s.example.com").unwrap(),
            Credential::IdentityToken(Secret::new("tok"))
        );
        assert_eq!(
            k.resolve("t.example.com").unwrap(),
            Credential::Basic {
                username: "a".into(),
                password: Secret::new("b")
            }
        );
        assert_eq!(
            k.resolve("other.example.com").unwrap(),
            Credential::Anonymous
        );
    }
}

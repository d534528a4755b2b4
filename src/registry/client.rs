//! The Distribution API client. Auth and retries live in [`Client::send`];
//! the operations above it never see tokens.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::Body;
use ureq::http::Response;

use super::auth::{Credential, Keychain, basic_header};
use super::retry::{Policy, parse_retry_after, retryable_status};
use crate::oci::{Digest, media};

/// Where private registries' CA certificates live, as for podman and docker.
pub const DEFAULT_CERT_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// Requests a caller runs in parallel against one registry (listing, deleting):
/// idle connections are kept for that many.
pub const PARALLEL_REQUESTS: usize = 8;

/// Manifests larger than this are refused (the Distribution spec's limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A repository on a registry: `host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    pub host: String,
    pub path: String,
    /// Plain HTTP (targets marked `insecure: true`).
    pub insecure: bool,
    /// Upload in chunks of this size, resuming after failures; `None`: one PUT.
    pub chunk_size: Option<u64>,
}

impl Repository {
    fn scheme(&self) -> &'static str {
        if self.insecure { "http" } else { "https" }
    }

    fn url(&self, rest: &str) -> String {
        format!("{}://{}/v2/{}/{rest}", self.scheme(), self.host, self.path)
    }

    /// Resolves a `Location` header (absolute URL, or path on the registry).
    fn resolve(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}://{}{}", self.scheme(), self.host, location)
        }
    }
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{repo}: {op}: HTTP {status}{}", if .body.is_empty() { String::new() } else { format!(": {}", .body) })]
    Status {
        repo: String,
        op: String,
        status: u16,
        body: String,
    },
    #[error("{repo}: {op}: {message}")]
    Other {
        repo: String,
        op: String,
        message: String,
    },
}

impl RegistryError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            Self::Other { .. } => None,
        }
    }
}

/// A manifest as read from a registry, its digest verified.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub digest: Digest,
    pub bytes: Vec<u8>,
}

/// A blob's content from a byte offset on: opened again for every attempt of
/// an upload, and at the resume point of a chunked one.
pub type Opener<'a> = dyn Fn(u64) -> std::io::Result<Box<dyn Read + Send + 'a>> + Sync + 'a;

/// Builds and sends one attempt of a request, given the `Authorization` value.
type MakeRequest<'a> =
    dyn Fn(&ureq::Agent, Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

#[derive(Debug)]
pub struct Client {
    /// One agent per registry host (hosts with a private CA get their own roots).
    agents: Mutex<HashMap<String, ureq::Agent>>,
    cert_dirs: Vec<std::path::PathBuf>,
    keychain: Keychain,
    creds: Mutex<HashMap<String, Credential>>,
    /// Bearer tokens per (host, scope); `Basic` headers are stored the same way.
    tokens: Mutex<HashMap<(String, String), String>>,
    policy: Policy,
}

enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Client {
    pub fn new(keychain: Keychain) -> Self {
        Self::with_policy(keychain, Policy::default())
    }

    pub fn with_policy(keychain: Keychain, policy: Policy) -> Self {
        Self {
            agents: Mutex::default(),
            cert_dirs: DEFAULT_CERT_DIRS
                .iter()
                .map(std::path::PathBuf::from)
                .collect(),
            keychain,
            creds: Mutex::default(),
            tokens: Mutex::default(),
            policy,
        }
    }

    /// Directories holding `<host>/*.crt` CA certificates for private registries
    /// (replacing the defaults `/etc/containers/certs.d` and `/etc/docker/certs.d`).
    #[must_use]
    pub fn with_cert_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.cert_dirs = dirs;
        self
    }

    /// The agent for a host: TLS verified against Mozilla's roots, or against
    /// the host's own CA certificates when `certs.d/<host>/*.crt` exist.
    fn agent(&self, host: &str) -> Result<ureq::Agent, String> {
        if let Some(a) = self.agents.lock().expect("lock").get(host) {
            return Ok(a.clone());
        }
        let mut certs = Vec::new();
        for dir in &self.cert_dirs {
            let Ok(entries) = std::fs::read_dir(dir.join(host)) else {
                continue;
            };
            let mut files: Vec<_> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            for f in files {
                let pem = std::fs::read(&f).map_err(|e| format!("{}: {e}", f.display()))?;
                certs.push(
                    ureq::tls::Certificate::from_pem(&pem)
                        .map_err(|e| format!("{}: not a PEM certificate: {e}", f.display()))?,
                );
            }
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .max_redirects(5)
            // Listing and deleting run many requests in parallel: keep their connections.
            .max_idle_connections_per_host(2 * PARALLEL_REQUESTS)
            .max_idle_connections(8 * PARALLEL_REQUESTS)
            .user_agent(concat!("imagepipe/", env!("CARGO_PKG_VERSION")));
        if !certs.is_empty() {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
        }
        let agent = config.build().new_agent();
        self.agents
            .lock()
            .expect("lock")
            .insert(host.to_owned(), agent.clone());
        Ok(agent)
    }

    fn err(repo: &Repository, op: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Other {
            repo: repo.to_string(),
            op: op.to_owned(),
            message: message.into(),
        }
    }

    fn status_err(repo: &Repository, op: &str, resp: Response<Body>) -> RegistryError {
        let status = resp.status().as_u16();
        let mut body = String::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(2048)
            .read_to_string(&mut body);
        RegistryError::Status {
            repo: repo.to_string(),
            op: op.to_owned(),
            status,
            body: body.trim().chars().take(500).collect(),
        }
    }

    /// Sends a request built by `make` (called again for each retry, with the
    /// current `Authorization` value), handling auth challenges and retrying
    /// transient failures. `scope` is e.g. `repository:ns/name:pull,push`.
    fn send(
        &self,
        repo: &Repository,
        op: &str,
        scope: &str,
        make: &MakeRequest<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        self.send_with(self.policy, repo, op, scope, make)
    }

    /// [`send`](Self::send) with another retry policy (one attempt, for
    /// requests whose retry must start over at a higher level).
    fn send_with(
        &self,
        policy: Policy,
        repo: &Repository,
        op: &str,
        scope: &str,
        make: &MakeRequest<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let started = Instant::now();
        let agent = self.agent(&repo.host).map_err(|e| Self::err(repo, op, e))?;
        let key = (repo.host.clone(), scope.to_owned());
        let mut retries = 0;
        let mut auth_rounds = 0;
        loop {
            let auth = self.tokens.lock().expect("lock").get(&key).cloned();
            let result = make(&agent, auth.as_deref());
            let retry_after = match result {
                Ok(resp) if resp.status().as_u16() == 401 && auth_rounds < 2 => {
                    auth_rounds += 1;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let header = self.authorize(repo, op, scope, challenge.as_deref())?;
                    self.tokens
                        .lock()
                        .expect("lock")
                        .insert(key.clone(), header);
                    continue;
                }
                Ok(resp) if retryable_status(resp.status().as_u16()) => {
                    let ra = parse_retry_after(
                        resp.headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()),
                    );
                    match policy.wait(retries + 1, started, ra) {
                        Some(_) => {
                            tracing::warn!(
                                "{repo}: {op}: HTTP {}, retrying",
                                resp.status().as_u16()
                            );
                            ra
                        }
                        None => return Err(Self::status_err(repo, op, resp)),
                    }
                }
                Ok(resp) => return Ok(resp),
                Err(e) if !transient(&e) => return Err(Self::err(repo, op, e.to_string())),
                Err(e) => {
                    if policy.wait(retries + 1, started, None).is_none() {
                        return Err(Self::err(
                            repo,
                            op,
                            format!("{e} (after {} attempts)", retries + 1),
                        ));
                    }
                    tracing::warn!("{repo}: {op}: {e}, retrying");
                    None
                }
            };
            retries += 1;
            if let Some(wait) = policy.wait(retries, started, retry_after) {
                std::thread::sleep(wait);
            }
        }
    }

    fn credential(&self, repo: &Repository) -> Result<Credential, RegistryError> {
        if let Some(c) = self.creds.lock().expect("lock").get(&repo.host) {
            return Ok(c.clone());
        }
        let c = self
            .keychain
            .resolve(&repo.host)
            .map_err(|e| Self::err(repo, "credentials", e))?;
        self.creds
            .lock()
            .expect("lock")
            .insert(repo.host.clone(), c.clone());
        Ok(c)
    }

    /// The `Authorization` value answering a 401 challenge.
    fn authorize(
        &self,
        repo: &Repository,
        op: &str,
        scope: &str,
        challenge: Option<&str>,
    ) -> Result<String, RegistryError> {
        let cred = self.credential(repo)?;
        let no_creds = || {
            Self::err(
                repo,
                op,
                format!(
                    "the registry requires credentials for {}: log in (`docker login {}` / `skopeo login`) or set DOCKER_CONFIG / REGISTRY_AUTH_FILE",
                    repo.host, repo.host
                ),
            )
        };
        match parse_challenge(challenge.unwrap_or("")) {
            Some(Challenge::Basic) => match cred {
                Credential::Basic { username, password } => Ok(basic_header(&username, &password)),
                _ => Err(no_creds()),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let token = self.fetch_token(repo, &realm, service.as_deref(), scope, &cred)?;
                Ok(format!("Bearer {token}"))
            }
            None => match cred {
                Credential::Anonymous => Err(no_creds()),
                _ => Err(Self::err(
                    repo,
                    op,
                    "the registry answered 401 without a usable WWW-Authenticate challenge",
                )),
            },
        }
    }

    fn fetch_token(
        &self,
        repo: &Repository,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        cred: &Credential,
    ) -> Result<String, RegistryError> {
        let op = "token";
        let agent = self.agent(&repo.host).map_err(|e| Self::err(repo, op, e))?;
        let resp = match cred {
            Credential::IdentityToken(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.expose()),
                    ("client_id", "imagepipe"),
                    ("scope", scope),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                agent.post(realm).send_form(form)
            }
            _ => {
                let mut req = agent.get(realm).query("scope", scope);
                if let Some(s) = service {
                    req = req.query("service", s);
                }
                if let Credential::Basic { username, password } = cred {
                    req = req.header("Authorization", &basic_header(username, password));
                }
                req.call()
            }
        }
        .map_err(|e| Self::err(repo, op, format!("token endpoint {realm}: {e}")))?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let hint = if matches!(status, 401 | 403) {
                " (check the credentials for this registry)"
            } else {
                ""
            };
            return Err(Self::err(
                repo,
                op,
                format!("token endpoint {realm}: HTTP {status}{hint}"),
            ));
        }
        let v = read_json(resp, 1 << 20)
            .map_err(|e| Self::err(repo, op, format!("token response: {e}")))?;
        v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| Self::err(repo, op, "token response holds no token"))
    }

    fn pull(repo: &Repository) -> String {
        format!("repository:{}:pull", repo.path)
    }

    fn push(repo: &Repository) -> String {
        format!("repository:{}:pull,push", repo.path)
    }

    /// `GET /v2/`: is this a registry, and can we reach it?
    pub fn ping(&self, repo: &Repository) -> Result<(), RegistryError> {
        let url = format!("{}://{}/v2/", repo.scheme(), repo.host);
        let resp = self.send(repo, "ping", &Self::pull(repo), &|a, auth| {
            with_auth(a.get(&url), auth).call()
        })?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(Self::status_err(repo, "ping", resp))
        }
    }

    pub fn blob_exists(&self, repo: &Repository, digest: &Digest) -> Result<bool, RegistryError> {
        let url = repo.url(&format!("blobs/{digest}"));
        let resp = self.send(repo, "blob HEAD", &Self::pull(repo), &|a, auth| {
            with_auth(a.head(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(Self::status_err(repo, &format!("blob HEAD {digest}"), resp)),
        }
    }

    /// Mounts a blob from another repository of the same registry; `false`
    /// when the registry declined (it then offered an upload, which is cancelled).
    pub fn mount_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        from: &str,
    ) -> Result<bool, RegistryError> {
        let url = repo.url(&format!("blobs/uploads/?mount={digest}&from={from}"));
        let scope = format!("{} repository:{from}:pull", Self::push(repo));
        let resp = self.send(repo, "blob mount", &scope, &|a, auth| {
            with_auth(a.post(&url), auth)
                .header("Content-Length", "0")
                .send_empty()
        })?;
        match resp.status().as_u16() {
            201 => Ok(true),
            202 => {
                if let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                    let loc = repo.resolve(loc);
                    let _ = self.send(repo, "cancel upload", &Self::push(repo), &|a, auth| {
                        with_auth(a.delete(&loc), auth).call()
                    });
                }
                Ok(false)
            }
            _ => Err(Self::status_err(
                repo,
                &format!("blob mount {digest} from {from}"),
                resp,
            )),
        }
    }

    /// Streams a blob from `offset` on (`Range` when not 0); the caller
    /// verifies the digest of what it reads.
    pub fn get_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        offset: u64,
    ) -> Result<Box<dyn Read + Send>, RegistryError> {
        let op = format!("blob GET {digest}");
        let url = repo.url(&format!("blobs/{digest}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            let req = with_auth(a.get(&url), auth);
            if offset > 0 {
                req.header("Range", &format!("bytes={offset}-")).call()
            } else {
                req.call()
            }
        })?;
        match resp.status().as_u16() {
            200 if offset == 0 => {}
            206 => {}
            200 => {
                // The registry ignored the range: skip to the offset ourselves.
                let mut body = resp.into_body().into_reader();
                std::io::copy(&mut (&mut body).take(offset), &mut std::io::sink())
                    .map_err(|e| Self::err(repo, &op, e.to_string()))?;
                return Ok(Box::new(body));
            }
            _ => return Err(Self::status_err(repo, &op, resp)),
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// Uploads a blob: one streamed PUT, or resumable chunks when the
    /// repository has a chunk size. A failed PUT starts a new session; a
    /// failed chunk resumes where the registry says it got to.
    pub fn upload_blob(
        &self,
        repo: &Repository,
        digest: &Digest,
        size: u64,
        open: &Opener<'_>,
    ) -> Result<(), RegistryError> {
        let op = format!("blob upload {digest}");
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match repo.chunk_size {
                // A blob that fits in one chunk goes in one request.
                Some(chunk) if size > chunk => {
                    self.upload_chunked(repo, &op, digest, size, open, chunk)
                }
                _ => self.upload_monolithic(repo, &op, digest, size, open),
            };
            let error = match result {
                Ok(()) => return Ok(()),
                Err(e) if e.status().is_some_and(|s| !retryable_status(s)) => return Err(e),
                Err(e) => e,
            };
            match self.policy.wait(attempt, started, None) {
                Some(wait) => {
                    tracing::warn!("{error}; starting the upload again");
                    std::thread::sleep(wait);
                }
                None => return Err(error),
            }
        }
    }

    fn upload_monolithic(
        &self,
        repo: &Repository,
        op: &str,
        digest: &Digest,
        size: u64,
        open: &Opener<'_>,
    ) -> Result<(), RegistryError> {
        // A failed PUT leaves its session with part of the data: each attempt
        // starts a new session (the caller retries).
        let (location, _) = self.start_upload(repo, op)?;
        let put = with_digest(&location, digest);
        let once = Policy {
            attempts: 1,
            ..self.policy
        };
        let resp = self.send_with(once, repo, op, &Self::push(repo), &|a, auth| {
            let mut reader = open(0).map_err(ureq::Error::Io)?.take(size);
            with_auth(a.put(&put), auth)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Length", &size.to_string())
                .send(ureq::SendBody::from_reader(&mut reader))
        })?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(Self::status_err(repo, op, resp)),
        }
    }

    fn upload_chunked(
        &self,
        repo: &Repository,
        op: &str,
        digest: &Digest,
        size: u64,
        open: &Opener<'_>,
        chunk: u64,
    ) -> Result<(), RegistryError> {
        let (mut location, min_chunk) = self.start_upload(repo, op)?;
        let chunk = chunk.max(min_chunk.unwrap_or(0));
        let started = Instant::now();
        let once = Policy {
            attempts: 1,
            ..self.policy
        };
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let url = location.clone();
            let result = self.send_with(once, repo, op, &Self::push(repo), &|a, auth| {
                let mut part = open(offset).map_err(ureq::Error::Io)?.take(len);
                with_auth(a.patch(&url), auth)
                    .header("Content-Type", "application/octet-stream")
                    .header("Content-Range", &format!("{offset}-{}", offset + len - 1))
                    .header("Content-Length", &len.to_string())
                    .send(ureq::SendBody::from_reader(&mut part))
            });
            match result {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    if let Some(l) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                        location = repo.resolve(l);
                    }
                    offset = range_end(&resp).map_or(offset + len, |end| end + 1);
                }
                Ok(resp) if !retryable_status(resp.status().as_u16()) => {
                    return Err(Self::status_err(repo, op, resp));
                }
                other => {
                    failures += 1;
                    let why = match other {
                        Ok(resp) => format!("HTTP {}", resp.status().as_u16()),
                        Err(e) => e.to_string(),
                    };
                    let Some(wait) = self.policy.wait(failures, started, None) else {
                        return Err(Self::err(repo, op, format!("chunk at {offset}: {why}")));
                    };
                    std::thread::sleep(wait);
                    // Ask the registry how much it has, and go on from there. A
                    // registry that dropped the session (Distribution does when a
                    // chunk was cut short) answers 404: the caller starts over.
                    let (loc, got) = self.upload_status(repo, op, &location).map_err(|e| {
                        Self::err(repo, op, format!("chunk at {offset}: {why}; the registry cannot resume the session ({e})"))
                    })?;
                    location = loc;
                    offset = got;
                    tracing::warn!("{repo}: {op}: {why}; resuming at byte {offset}");
                }
            }
        }
        let put = with_digest(&location, digest);
        let resp = self.send(repo, op, &Self::push(repo), &|a, auth| {
            with_auth(a.put(&put), auth)
                .header("Content-Length", "0")
                .send_empty()
        })?;
        match resp.status().as_u16() {
            201 | 204 => Ok(()),
            _ => Err(Self::status_err(repo, op, resp)),
        }
    }

    /// `GET <upload>`: the session's current location and how many bytes it holds.
    fn upload_status(
        &self,
        repo: &Repository,
        op: &str,
        location: &str,
    ) -> Result<(String, u64), RegistryError> {
        let resp = self.send(repo, op, &Self::push(repo), &|a, auth| {
            with_auth(a.get(location), auth).call()
        })?;
        if resp.status().as_u16() != 204 {
            return Err(Self::status_err(repo, op, resp));
        }
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| location.to_owned(), |l| repo.resolve(l));
        Ok((loc, range_end(&resp).map_or(0, |end| end + 1)))
    }

    /// `POST /blobs/uploads/`: a new upload session's URL and the registry's
    /// minimum chunk size (`OCI-Chunk-Min-Length`), if it sets one.
    fn start_upload(
        &self,
        repo: &Repository,
        op: &str,
    ) -> Result<(String, Option<u64>), RegistryError> {
        let start = repo.url("blobs/uploads/");
        let resp = self.send(repo, op, &Self::push(repo), &|a, auth| {
            with_auth(a.post(&start), auth)
                .header("Content-Length", "0")
                .send_empty()
        })?;
        if resp.status().as_u16() != 202 {
            return Err(Self::status_err(repo, op, resp));
        }
        let min_chunk = resp
            .headers()
            .get("oci-chunk-min-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| repo.resolve(l))
            .ok_or_else(|| Self::err(repo, op, "upload session without a Location"))?;
        Ok((location, min_chunk))
    }

    /// Stores a manifest under a tag or digest; the registry's digest is checked.
    pub fn put_manifest(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        self.put_manifest_headers(repo, reference, media_type, bytes)
            .map(|(d, _)| d)
    }

    /// Stores a manifest that has a `subject` by its digest; `true` when the
    /// registry indexed it for the referrers API (it answered `OCI-Subject`).
    pub fn put_referrer_manifest(
        &self,
        repo: &Repository,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<bool, RegistryError> {
        let (stored, subject) =
            self.put_manifest_headers(repo, &digest.to_string(), media_type, bytes)?;
        if stored != *digest {
            return Err(Self::err(
                repo,
                "referrer PUT",
                format!("the manifest is {stored}, not {digest}"),
            ));
        }
        Ok(subject)
    }

    fn put_manifest_headers(
        &self,
        repo: &Repository,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<(Digest, bool), RegistryError> {
        let op = format!("manifest PUT {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::push(repo), &|a, auth| {
            with_auth(a.put(&url), auth)
                .header("Content-Type", media_type)
                .send(bytes)
        })?;
        if !matches!(resp.status().as_u16(), 200..=202) {
            return Err(Self::status_err(repo, &op, resp));
        }
        let digest = Digest::of(bytes);
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && d != digest.to_string()
        {
            return Err(Self::err(
                repo,
                &op,
                format!("the registry stored {d}, we sent {digest}"),
            ));
        }
        let subject = resp.headers().contains_key("oci-subject");
        Ok((digest, subject))
    }

    /// The digest, media type and size a tag or digest resolves to; `None` if absent.
    pub fn head_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<(Digest, String, u64)>, RegistryError> {
        let op = format!("manifest HEAD {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.head(&url), auth)
                .header("Accept", MANIFEST_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            404 => Ok(None),
            200 => {
                let h = resp.headers();
                let digest = h
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|d| d.parse().ok());
                let mt = h
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(media::MANIFEST)
                    .to_owned();
                let size = h
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                match digest {
                    Some(d) => Ok(Some((d, mt, size))),
                    // Without the header, read the manifest and hash it.
                    None => self
                        .get_manifest(repo, reference)
                        .map(|m| m.map(|m| (m.digest, m.media_type, m.bytes.len() as u64))),
                }
            }
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }

    /// Reads a manifest (at most 4 MiB), verifying its digest.
    pub fn get_manifest(
        &self,
        repo: &Repository,
        reference: &str,
    ) -> Result<Option<Manifest>, RegistryError> {
        let op = format!("manifest GET {reference}");
        let url = repo.url(&format!("manifests/{reference}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", MANIFEST_ACCEPT)
                .call()
        })?;
        match resp.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            _ => return Err(Self::status_err(repo, &op, resp)),
        }
        let mt = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(media::MANIFEST)
            .to_owned();
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bytes = Vec::new();
        resp.into_body()
            .into_reader()
            .take(MAX_MANIFEST_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Self::err(repo, &op, e.to_string()))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Self::err(
                repo,
                &op,
                format!("manifest larger than {MAX_MANIFEST_BYTES} bytes, refused"),
            ));
        }
        let digest = Digest::of(&bytes);
        let expected = reference
            .parse::<Digest>()
            .ok()
            .map(|d| d.to_string())
            .or(header_digest);
        if let Some(e) = expected
            && e != digest.to_string()
        {
            return Err(Self::err(
                repo,
                &op,
                format!("content digest {digest} does not match {e}"),
            ));
        }
        Ok(Some(Manifest {
            media_type: mt,
            digest,
            bytes,
        }))
    }

    /// Every tag, following `Link: rel="next"` pages; stops on a repeated page
    /// (registries that ignore `n`/`last` send the whole list every time).
    pub fn list_tags(&self, repo: &Repository) -> Result<Vec<String>, RegistryError> {
        let mut url = repo.url("tags/list?n=1000");
        let mut tags: Vec<String> = Vec::new();
        let mut seen_urls = std::collections::HashSet::new();
        loop {
            if !seen_urls.insert(url.clone()) {
                break;
            }
            let current = url.clone();
            let resp = self.send(repo, "tag list", &Self::pull(repo), &|a, auth| {
                with_auth(a.get(&current), auth).call()
            })?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(Vec::new()),
                _ => return Err(Self::status_err(repo, "tag list", resp)),
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let v = read_json(resp, 64 << 20).map_err(|e| Self::err(repo, "tag list", e))?;
            let page: Vec<String> = v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let before = tags.len();
            for t in page {
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            match next {
                Some(n) if tags.len() > before => url = repo.resolve(&n),
                _ => break,
            }
        }
        Ok(tags)
    }

    /// The manifests that refer to `digest` (OCI 1.1 referrers API); `None`
    /// when the registry does not offer it (CNCF Distribution 2.x answers 404).
    pub fn referrers(
        &self,
        repo: &Repository,
        digest: &Digest,
    ) -> Result<Option<Vec<crate::oci::Descriptor>>, RegistryError> {
        let op = format!("referrers {digest}");
        let url = repo.url(&format!("referrers/{digest}"));
        let resp = self.send(repo, &op, &Self::pull(repo), &|a, auth| {
            with_auth(a.get(&url), auth)
                .header("Accept", media::INDEX)
                .call()
        })?;
        match resp.status().as_u16() {
            200 => {
                let v = read_json(resp, MAX_MANIFEST_BYTES).map_err(|e| Self::err(repo, &op, e))?;
                let list = v["manifests"].as_array().cloned().unwrap_or_default();
                list.into_iter()
                    .map(|d| {
                        serde_json::from_value(d).map_err(|e| Self::err(repo, &op, e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Some)
            }
            404 | 405 => Ok(None),
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }

    /// Deletes a tag alone (OCI 1.1 `DELETE /manifests/<tag>`); `false` when
    /// the registry does not support it (Distribution answers 400).
    pub fn delete_tag(&self, repo: &Repository, tag: &str) -> Result<bool, RegistryError> {
        let op = format!("tag DELETE {tag}");
        let url = repo.url(&format!("manifests/{tag}"));
        let scope = format!("repository:{}:delete,pull,push", repo.path);
        let resp = self.send(repo, &op, &scope, &|a, auth| {
            with_auth(a.delete(&url), auth).call()
        })?;
        Ok(matches!(resp.status().as_u16(), 200 | 202 | 204))
    }

    pub fn delete_manifest(&self, repo: &Repository, digest: &Digest) -> Result<(), RegistryError> {
        let op = format!("manifest DELETE {digest}");
        let url = repo.url(&format!("manifests/{digest}"));
        let scope = format!("repository:{}:delete,pull,push", repo.path);
        let resp = self.send(repo, &op, &scope, &|a, auth| {
            with_auth(a.delete(&url), auth).call()
        })?;
        match resp.status().as_u16() {
            200 | 202 | 204 | 404 => Ok(()),
            _ => Err(Self::status_err(repo, &op, resp)),
        }
    }
}

/// `<upload url>` with the `digest` query parameter that closes the upload.
fn with_digest(location: &str, digest: &Digest) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// The last byte a `Range: 0-<end>` upload status header reports. `0-0`
/// is what Distribution sends for an empty session too, so it counts as none.
fn range_end(resp: &Response<Body>) -> Option<u64> {
    let v = resp.headers().get("range")?.to_str().ok()?;
    let end: u64 = v
        .trim_start_matches("bytes=")
        .split_once('-')?
        .1
        .parse()
        .ok()?;
    (end > 0).then_some(end)
}

/// Transport failures worth retrying: dropped connections, timeouts, I/O.
/// TLS, protocol and address errors will not get better by waiting.
fn transient(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        // rustls reports certificate failures as InvalidData I/O errors.
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            K::InvalidData | K::InvalidInput | K::PermissionDenied | K::Unsupported
        ),
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::BodyStalled => true,
        _ => false,
    }
}

/// A JSON response body of at most `limit` bytes.
fn read_json(resp: Response<Body>, limit: u64) -> Result<serde_json::Value, String> {
    let mut bytes = Vec::new();
    resp.into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("response larger than {limit} bytes"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    match auth {
        Some(a) => req.header("Authorization", a),
        None => req,
    }
}

/// The target of `Link: <url>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        })
    })
}

fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '"').collect()
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_and_links() {
        let Some(Challenge::Bearer { realm, service }) = parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        ) else {
            panic!()
        };
        assert_eq!(realm, "https://auth.example.com/token");
        assert_eq!(service.as_deref(), Some("registry.example.com"));
        assert!(matches!(
            parse_challenge("Basic realm=\"x\""),
            Some(Challenge::Basic)
        ));
        assert_eq!(
            next_link(r#"</v2/a/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?n=2&last=b")
        );
    }
}

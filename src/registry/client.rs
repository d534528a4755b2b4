//! The Distribution API client: its values (repositories, errors) and the
//! client itself. The transport below it ([`super::transport`]: TLS, auth
//! challenges, tokens, retries) is the only code that sees credentials; the
//! operations above it are split by resource: [`super::blobs`],
//! [`super::manifests`], [`super::tags`].

use super::auth::{Credential, Keychain};
use super::retry::Policy;
use crate::oci::Digest;
use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

/// Where private registries' CA certificates live, as for podman and docker.
pub const DEFAULT_CERT_DIRS: &[&str] = &["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// Requests a caller runs in parallel against one registry (listing, deleting):
/// idle connections are kept for that many.
pub const PARALLEL_REQUESTS: usize = 8;

/// Manifests larger than this are refused (the Distribution spec's limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

pub(super) const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

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
    pub(super) fn scheme(&self) -> &'static str {
        if self.insecure { "http" } else { "https" }
    }

    pub(super) fn url(&self, rest: &str) -> String {
        format!("{}://{}/v2/{}/{rest}", self.scheme(), self.host, self.path)
    }

    /// Whether `url` is on this repository's registry (scheme, host and port).
    pub fn same_origin(&self, url: &str) -> bool {
        let origin = format!("{}://{}", self.scheme(), self.host);
        url.strip_prefix(&origin)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
    }

    /// Resolves a `Location` header (absolute URL, or path on the registry).
    pub(super) fn resolve(&self, location: &str) -> String {
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

#[derive(Debug)]
pub struct Client {
    /// One agent per registry host (hosts with a private CA get their own roots).
    pub(super) agents: Mutex<HashMap<String, ureq::Agent>>,
    pub(super) cert_dirs: Vec<std::path::PathBuf>,
    pub(super) keychain: Keychain,
    /// Each host's credential, or why it could not be had (asked once a run:
    /// a credential helper that hangs is not waited for twice).
    pub(super) creds: Mutex<HashMap<String, Result<Credential, String>>>,
    /// Bearer tokens per (host, scope); `Basic` headers are stored the same way.
    pub(super) tokens: Mutex<HashMap<(String, String), String>>,
    pub(super) policy: Policy,
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

    /// The same client (credentials, trusted certificates, tokens had so
    /// far) with another retry policy.
    pub fn with_retries(&self, policy: Policy) -> Self {
        fn copy<K: Clone, V: Clone>(m: &Mutex<HashMap<K, V>>) -> Mutex<HashMap<K, V>> {
            Mutex::new(m.lock().map(|g| g.clone()).unwrap_or_default())
        }
        Self {
            agents: Mutex::default(),
            cert_dirs: self.cert_dirs.clone(),
            keychain: self.keychain.clone(),
            creds: copy(&self.creds),
            tokens: copy(&self.tokens),
            policy,
        }
    }

    /// The retry policy of this client's requests.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Directories holding `<host[:port]>/*.crt` CA certificates for private registries
    /// (replacing the defaults `/etc/containers/certs.d` and `/etc/docker/certs.d`).
    #[must_use]
    pub fn with_cert_dirs(mut self, dirs: Vec<std::path::PathBuf>) -> Self {
        self.cert_dirs = dirs;
        self
    }
}

//! Below every operation: one `ureq` agent per host (TLS roots, private
//! CAs), auth challenges answered with credentials from the keychain or a
//! token for the exact scope, tokens cached per host and scope, and retries
//! with backoff for transient failures. Nothing above this sees a secret.

use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

use ureq::Body;
use ureq::http::Response;

use super::auth::{Credential, basic_header};
use super::client::{Client, PARALLEL_REQUESTS, RegistryError, Repository};
use super::retry::{Policy, parse_retry_after, retryable_status};

/// Builds and sends one attempt of a request, given the `Authorization` value.
pub(super) type MakeRequest<'a> =
    dyn Fn(&ureq::Agent, Option<&Auth<'_>>) -> Result<Response<Body>, ureq::Error> + 'a;

/// An `Authorization` value and the one origin (scheme, host and port) it
/// may be sent to: the registry it was obtained for. A request anywhere
/// else — an upload `Location` or a page `Link` on another host — goes
/// without it, as Go's HTTP client and go-containerregistry do.
#[derive(Debug)]
pub(super) struct Auth<'a> {
    pub header: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
}

enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

impl Client {
    /// The agent for a host: TLS verified against Mozilla's roots, or against
    /// the host's own CA certificates when `certs.d/<host[:port]>/*.crt` exist.
    pub(super) fn agent(&self, host: &str) -> Result<ureq::Agent, String> {
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
            .middleware(crate::http::Trace)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // Every read and write: no server holds a run forever.
            .timeout_per_read(Some(crate::http::read_timeout()))
            .timeout_per_write(Some(crate::http::read_timeout()))
            .http_status_as_error(false)
            .max_redirects(5)
            // Listing and deleting run many requests in parallel: keep their connections.
            .max_idle_connections_per_host(2 * PARALLEL_REQUESTS)
            .max_idle_connections(8 * PARALLEL_REQUESTS)
            .user_agent(concat!("imagepipe/", env!("CARGO_PKG_VERSION")));
        let agent = if certs.is_empty() {
            config.build().new_agent()
        } else {
            // certs.d: trusted as skopeo trusts it (the host's own
            // self-signed certificate included), see `tls`.
            let der: Vec<_> = certs
                .iter()
                .map(|c| rustls::pki_types::CertificateDer::from(c.der().to_vec()))
                .collect();
            let tls = super::tls::config(&der).map_err(|e| format!("certs.d for {host}: {e}"))?;
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
                    .build(),
            );
            ureq::Agent::with_parts(
                config.build(),
                super::tls::connector(tls),
                ureq::unversioned::resolver::DefaultResolver::default(),
            )
        };
        self.agents
            .lock()
            .expect("lock")
            .insert(host.to_owned(), agent.clone());
        Ok(agent)
    }

    pub(super) fn err(repo: &Repository, op: &str, message: impl Into<String>) -> RegistryError {
        RegistryError::Other {
            repo: repo.to_string(),
            op: op.to_owned(),
            message: message.into(),
        }
    }

    pub(super) fn status_err(repo: &Repository, op: &str, resp: Response<Body>) -> RegistryError {
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
    pub(super) fn send(
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
    pub(super) fn send_with(
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
            let header = self.tokens.lock().expect("lock").get(&key).cloned();
            let auth = header.as_deref().map(|header| Auth {
                header,
                scheme: repo.scheme(),
                authority: &repo.host,
            });
            let result = make(&agent, auth.as_ref());
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
                Ok(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
                    return Err(self.denied(repo, op, resp.status().as_u16()));
                }
                Ok(resp) => return Ok(resp),
                Err(e) if !transient(&e) => {
                    return Err(Self::err(repo, op, with_tls_hint(repo, &e.to_string())));
                }
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

    /// A 401/403 that logging in again did not cure, saying what to do.
    fn denied(&self, repo: &Repository, op: &str, status: u16) -> RegistryError {
        let host = &repo.host;
        let had = self
            .creds
            .lock()
            .expect("lock")
            .get(host)
            .is_some_and(|c| !matches!(c, Ok(Credential::Anonymous)));
        let body = if self.keychain.overridden() {
            format!(
                "the registry refused the --creds credentials (HTTP {status}): check the user name and password (or token) and that they may {} `{}`",
                if op.contains("upload")
                    || op.contains("PUT")
                    || op.contains("push")
                    || op.contains("mount")
                {
                    "push to"
                } else {
                    "read"
                },
                repo.path
            )
        } else {
            let what = if had {
                format!("the registry refused the credentials found for `{host}`")
            } else {
                format!("access denied, and no credentials were found for `{host}`")
            };
            format!(
                "{what} — log in with `docker login {host}` (or `skopeo login {host}`), or point DOCKER_CONFIG, REGISTRY_AUTH_FILE or DOCKER_AUTH_CONFIG at a file with an entry for `{host}` (entries are matched on host[:port])"
            )
        };
        RegistryError::Status {
            repo: repo.to_string(),
            op: op.to_owned(),
            status,
            body,
        }
    }

    pub(super) fn credential(&self, repo: &Repository) -> Result<Credential, RegistryError> {
        let known = self.creds.lock().expect("lock").get(&repo.host).cloned();
        let c = match known {
            Some(c) => c,
            None => {
                let c = self.keychain.resolve(&repo.host);
                self.creds
                    .lock()
                    .expect("lock")
                    .insert(repo.host.clone(), c.clone());
                c
            }
        };
        c.map_err(|e| Self::err(repo, "credentials", e))
    }

    /// The `Authorization` value answering a 401 challenge.
    pub(super) fn authorize(
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

    pub(super) fn fetch_token(
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
                // A password goes to a token realm only over TLS, or to the
                // registry's own host when the target is plain HTTP on purpose.
                if let Credential::Basic { username, password } = cred {
                    if realm_may_see_password(repo, realm) {
                        req = req.header("Authorization", &basic_header(username, password));
                    } else {
                        return Err(Self::err(
                            repo,
                            op,
                            format!("the token realm {realm} is neither HTTPS nor this registry's own host: the password is not sent there"),
                        ));
                    }
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

    pub(super) fn pull(repo: &Repository) -> String {
        format!("repository:{}:pull", repo.path)
    }

    pub(super) fn push(repo: &Repository) -> String {
        format!("repository:{}:pull,push", repo.path)
    }
}

/// Whether a transport error says the host name does not exist (not a
/// temporary failure of the resolver, `EAI_AGAIN`, which is retried).
fn is_dns_failure(message: &str) -> bool {
    [
        "Name or service not known",
        "No address associated with hostname",
        "nodename nor servname",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Transport failures worth retrying: dropped connections, timeouts, I/O.
/// TLS, protocol and address errors will not get better by waiting, nor
/// will a refused connection or a name that does not resolve: those fail
/// at once.
fn transient(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Io(io) if is_dns_failure(&io.to_string()) => false,
        // rustls reports certificate failures as InvalidData I/O errors.
        ureq::Error::Io(io) => !matches!(
            io.kind(),
            K::InvalidData
                | K::InvalidInput
                | K::PermissionDenied
                | K::Unsupported
                | K::ConnectionRefused
        ),
        ureq::Error::HostNotFound => false,
        ureq::Error::Timeout(_) | ureq::Error::ConnectionFailed | ureq::Error::BodyStalled => true,
        _ => false,
    }
}

/// A JSON response body of at most `limit` bytes.
pub(super) fn read_json(resp: Response<Body>, limit: u64) -> Result<serde_json::Value, String> {
    let mut bytes = Vec::new();
    crate::http::Stalled::new(resp.into_body().into_reader())
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("response larger than {limit} bytes"));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))
}

/// A TLS failure, with where the registry's CA certificate goes.
fn with_tls_hint(repo: &Repository, message: &str) -> String {
    let tls = ["UnknownIssuer", "certificate", "Certificate", "tls", "TLS"];
    if message.contains("Connection refused") {
        format!(
            "{message} — nothing listens at {host}: is the registry running, and is the port right?",
            host = repo.host
        )
    } else if is_dns_failure(message) {
        format!(
            "{message} — the host name `{}` does not resolve: check its spelling, or the runner's DNS",
            repo.host.split(':').next().unwrap_or_default()
        )
    } else if message.contains("InvalidContentType") && !repo.insecure {
        format!(
            "{message} — {host} answers plain HTTP, not TLS: if that is intended, set `insecure: true` on its target",
            host = repo.host
        )
    } else if tls.iter().any(|t| message.contains(t)) {
        format!(
            "{message} — the registry's certificate is not trusted: put its CA certificate in /etc/containers/certs.d/{host}/ca.crt (the directory is named `{host}` exactly, port included), or in `<dir>/{host}/` of a directory listed in IMAGEPIPE_CERTS_DIR",
            host = repo.host
        )
    } else {
        message.to_owned()
    }
}

/// Whether a token realm may receive the user's password: over HTTPS, or on
/// the registry's own host when the target is marked `insecure`.
fn realm_may_see_password(repo: &Repository, realm: &str) -> bool {
    if realm.starts_with("https://") {
        return true;
    }
    let host = |u: &str| {
        u.split_once("://")
            .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or_default().to_owned())
    };
    let registry_host = repo.host.split(':').next().unwrap_or_default();
    repo.insecure
        && host(realm).is_some_and(|h| h.split(':').next().unwrap_or_default() == registry_host)
}

/// Adds the credentials to a request for their own origin only.
pub(super) fn with_auth<B>(
    req: ureq::RequestBuilder<B>,
    auth: Option<&Auth<'_>>,
) -> ureq::RequestBuilder<B> {
    let Some(a) = auth else {
        return req;
    };
    let same_origin = req.uri_ref().is_some_and(|u| {
        u.scheme_str() == Some(a.scheme)
            && u.authority()
                .is_some_and(|x| x.as_str().eq_ignore_ascii_case(a.authority))
    });
    if same_origin {
        req.header("Authorization", a.header)
    } else {
        tracing::debug!(
            "not sending credentials for {} to another origin",
            a.authority
        );
        req
    }
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

impl Client {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a server puts in `WWW-Authenticate`: no panic.
        #[test]
        fn any_challenge_header_is_parsed_or_refused(h in "\\PC{0,200}", realm in "[ -~]{0,80}") {
            let _ = parse_challenge(&h);
            let _ = parse_challenge(&format!("Bearer realm=\"{realm}\",service={h}"));
            let _ = parse_challenge(&format!("Basic {h}"));
        }
    }

    #[test]
    fn challenges() {
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
    }
}

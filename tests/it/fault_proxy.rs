//! A fault-injecting HTTP proxy in front of a real registry, for the faults a
//! registry will not produce on demand: 5xx bursts, 429 with Retry-After,
//! connections reset in the middle of an upload. One request per connection
//! (`Connection: close` is forced) so every request can be judged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do with requests matching `method` and containing `path`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After`, if given) `times` times.
    Status {
        method: &'static str,
        path: &'static str,
        status: u16,
        retry_after: Option<u32>,
        times: usize,
    },
    /// Answer with this status, extra header lines and body, `times` times
    /// (a registry that misbehaves in what it says, not how it says it).
    Respond {
        method: &'static str,
        path: &'static str,
        status: u16,
        headers: String,
        body: Vec<u8>,
        times: usize,
        /// Only requests that carry `Authorization` (once the client has logged in).
        authorized: bool,
    },
    /// Let `skip` matching requests through, then forward but cut the
    /// connection after `bytes` body bytes (0: before anything reaches the
    /// registry), `times` times.
    ResetAfter {
        method: &'static str,
        path: &'static str,
        skip: usize,
        bytes: usize,
        times: usize,
    },
    /// For the first matching request, run `hook` before forwarding it
    /// (`after: false`), or after the registry answered and before the
    /// answer is passed on (`after: true`).
    Hook {
        method: &'static str,
        path: &'static str,
        after: bool,
        hook: Hook,
    },
}

/// A function a [`Fault::Hook`] runs once: another runner acting at the
/// moment that matters.
#[derive(Clone)]
pub struct Hook(Arc<Mutex<Option<Run>>>);

type Run = Box<dyn FnOnce() + Send>;

impl Hook {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    fn take(&self) -> Option<Run> {
        self.0.lock().unwrap().take()
    }
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// A bearer-token front: the proxy plays the registry's token server.
#[derive(Debug, Default)]
pub struct TokenAuth {
    pub user: String,
    pub password: String,
    /// The refresh token (Docker identity token) the token endpoint accepts.
    pub refresh_token: String,
    /// A token stops working after this many uses (0: never), forcing a re-auth.
    pub expire_after: usize,
    /// Every scope a token was asked for.
    pub scopes: Vec<String>,
    tokens: Vec<(String, usize)>,
}

impl TokenAuth {
    pub fn new(user: &str, password: &str, refresh_token: &str, expire_after: usize) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            refresh_token: refresh_token.into(),
            expire_after,
            ..Self::default()
        }
    }
}

pub struct FaultProxy {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    pub injected: Arc<AtomicUsize>,
    pub auth: Arc<Mutex<Option<TokenAuth>>>,
    /// `METHOD path` of every request seen.
    pub log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Vec<Fault>) -> Self {
        Self::start_full(upstream, faults, None)
    }

    pub fn start_with_auth(upstream: &str, faults: Vec<Fault>, auth: TokenAuth) -> Self {
        Self::start_full(upstream, faults, Some(auth))
    }

    fn start_full(upstream: &str, faults: Vec<Fault>, auth: Option<TokenAuth>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(faults));
        let auth = Arc::new(Mutex::new(auth));
        let auth_out = auth.clone();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let log_out = log.clone();
        let (requests, injected, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, i, s, up) = (
            requests.clone(),
            injected.clone(),
            stop.clone(),
            upstream.to_owned(),
        );
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, r, i, up, a) = (
                    faults.clone(),
                    r.clone(),
                    i.clone(),
                    up.clone(),
                    auth.clone(),
                );
                let l = log.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &f, &r, &i, &a, &l);
                });
            }
        });
        Self {
            addr,
            requests,
            injected,
            auth: auth_out,
            log: log_out,
            stop,
            handle: Some(handle),
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    faults: &Mutex<Vec<Fault>>,
    requests: &AtomicUsize,
    injected: &AtomicUsize,
    auth: &Mutex<Option<TokenAuth>>,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let first = head.lines().next().unwrap_or_default().to_owned();
    let (method, path) = {
        let mut p = first.split_whitespace();
        (
            p.next().unwrap_or_default().to_owned(),
            p.next().unwrap_or_default().to_owned(),
        )
    };
    log.lock().unwrap().push(format!("{method} {path}"));
    if let Some(a) = auth.lock().unwrap().as_mut()
        && let Some(done) = token_front(a, &client, &mut reader, &mut head, &method, &path)?
    {
        return done;
    }
    let mut reset_after = None;
    let (mut before, mut after) = (None, None);
    {
        let mut fs = faults.lock().unwrap();
        for f in fs.iter_mut() {
            match f {
                Fault::Hook {
                    method: m,
                    path: p,
                    after: a,
                    hook,
                } if *m == method && path.contains(*p) => {
                    if let Some(run) = hook.take() {
                        injected.fetch_add(1, Ordering::SeqCst);
                        if *a {
                            after = Some(run);
                        } else {
                            before = Some(run);
                        }
                    }
                }
                Fault::Status {
                    method: m,
                    path: p,
                    status,
                    retry_after,
                    times,
                } if *times > 0 && *m == method && path.contains(*p) => {
                    *times -= 1;
                    injected.fetch_add(1, Ordering::SeqCst);
                    let ra = retry_after
                        .map(|s| format!("Retry-After: {s}\r\n"))
                        .unwrap_or_default();
                    let mut c = client;
                    c.write_all(format!("HTTP/1.1 {status} Injected\r\n{ra}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
                    return c.shutdown(Shutdown::Both);
                }
                Fault::Respond {
                    method: m,
                    path: p,
                    status,
                    headers,
                    body,
                    times,
                    authorized,
                } if *times > 0
                    && *m == method
                    && path.contains(*p)
                    && (!*authorized || header(&head, "authorization").is_some()) =>
                {
                    *times -= 1;
                    injected.fetch_add(1, Ordering::SeqCst);
                    let mut c = client;
                    c.write_all(
                        format!(
                            "HTTP/1.1 {status} Injected\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )?;
                    c.write_all(body)?;
                    return c.shutdown(Shutdown::Both);
                }
                Fault::ResetAfter {
                    method: m,
                    path: p,
                    skip,
                    ..
                } if *skip > 0 && *m == method && path.contains(*p) => {
                    *skip -= 1;
                    break;
                }
                Fault::ResetAfter {
                    method: m,
                    path: p,
                    bytes,
                    times,
                    ..
                } if *times > 0 && *m == method && path.contains(*p) => {
                    *times -= 1;
                    injected.fetch_add(1, Ordering::SeqCst);
                    reset_after = Some(*bytes);
                    break;
                }
                _ => {}
            }
        }
    }
    if reset_after == Some(0) {
        return client.shutdown(Shutdown::Both);
    }
    if let Some(run) = before {
        run();
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    let content_length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    // Request body: forward (or cut it short).
    let mut left = content_length;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while left > 0 {
        let chunk = left.min(buf.len());
        let n = reader.read(&mut buf[..chunk])?;
        if n == 0 {
            break;
        }
        up.write_all(&buf[..n])?;
        left -= n;
        sent += n;
        if reset_after.is_some_and(|limit| sent >= limit) {
            let _ = up.shutdown(Shutdown::Both);
            return client.shutdown(Shutdown::Both);
        }
    }
    // Response: relay until the registry closes.
    let mut c = client;
    if let Some(run) = after {
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        run();
        c.write_all(&answer)?;
        return c.shutdown(Shutdown::Both);
    }
    std::io::copy(&mut up, &mut c)?;
    c.shutdown(Shutdown::Both)
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn respond(client: &TcpStream, status: &str, headers: &str, body: &str) -> std::io::Result<()> {
    let mut c = client;
    c.write_all(
        format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )?;
    c.shutdown(Shutdown::Both)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn query_param(path: &str, key: &str) -> Option<String> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            v.replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/")
                .replace('+', " ")
        })
    })
}

/// Plays the token server and checks bearer tokens; `Some(result)` when the
/// request was answered here, `None` to forward it (Authorization removed).
fn token_front(
    a: &mut TokenAuth,
    client: &TcpStream,
    reader: &mut BufReader<TcpStream>,
    head: &mut String,
    method: &str,
    path: &str,
) -> std::io::Result<Option<std::io::Result<()>>> {
    use base64::Engine as _;
    if path.starts_with("/token") {
        let ok = if method == "POST" {
            let len: usize = header(head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0u8; len];
            reader.read_exact(&mut body)?;
            let body = String::from_utf8_lossy(&body).into_owned();
            let form = format!("/?{body}");
            if let Some(scope) = query_param(&form, "scope") {
                a.scopes.push(scope);
            }
            query_param(&form, "grant_type").as_deref() == Some("refresh_token")
                && query_param(&form, "refresh_token").as_deref() == Some(a.refresh_token.as_str())
        } else {
            if let Some(scope) = query_param(path, "scope") {
                a.scopes.push(scope);
            }
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", a.user, a.password))
            );
            header(head, "authorization") == Some(expected.as_str())
        };
        if !ok {
            return Ok(Some(respond(client, "401 Unauthorized", "", "")));
        }
        let token = format!("tok-{}", a.tokens.len());
        a.tokens.push((token.clone(), 0));
        return Ok(Some(respond(
            client,
            "200 OK",
            "Content-Type: application/json\r\n",
            &format!("{{\"token\":\"{token}\",\"access_token\":\"{token}\"}}"),
        )));
    }
    let presented = header(head, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let limit = a.expire_after;
    let valid = presented
        .and_then(|t| a.tokens.iter_mut().find(|(k, _)| *k == t))
        .filter(|(_, uses)| limit == 0 || *uses < limit);
    match valid {
        Some((_, uses)) => {
            *uses += 1;
            *head = head
                .lines()
                .filter(|l| !l.to_ascii_lowercase().starts_with("authorization:"))
                .map(|l| format!("{l}\r\n"))
                .collect();
            Ok(None)
        }
        None => {
            let host = header(head, "host").unwrap_or("127.0.0.1");
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{host}/token\",service=\"test-registry\"\r\n"
            );
            Ok(Some(respond(
                client,
                "401 Unauthorized",
                &challenge,
                "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
            )))
        }
    }
}

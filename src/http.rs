//! Plain HTTP(S) downloads (upstream images and checksum files), and the
//! limits every transfer of imagepipe's has so that nothing waits forever:
//! an idle timeout on every read, and a minimum rate over a window.

use std::io::Read;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The idle timeout of every read and write, and the window of the minimum
/// rate: `IMAGEPIPE_READ_TIMEOUT` seconds, default 60.
pub fn read_timeout() -> Duration {
    static T: OnceLock<Duration> = OnceLock::new();
    *T.get_or_init(|| {
        std::env::var(crate::env::IMAGEPIPE_READ_TIMEOUT)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(Duration::from_secs(60), Duration::from_secs)
    })
}

/// Fewer bytes than this in one window of [`read_timeout`] is a stalled
/// transfer (a peer trickling a byte at a time never hits the idle timeout).
pub const MIN_BYTES_PER_WINDOW: u64 = 16 * 1024;

/// Every HTTP request at trace level (`-vv`): method, URL without its
/// query (upload sessions carry their state there) or user info, status or
/// error, time. Credentials are never logged.
#[derive(Clone, Copy, Debug)]
pub struct Trace;

impl ureq::middleware::Middleware for Trace {
    fn handle(
        &self,
        request: ureq::http::Request<ureq::SendBody<'_>>,
        next: ureq::middleware::MiddlewareNext<'_>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        if !tracing::enabled!(tracing::Level::TRACE) {
            return next.handle(request);
        }
        let method = request.method().clone();
        let uri = request.uri();
        // Host and port only: an authority may carry `user:password@`.
        let url = format!(
            "{}://{}{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.host().unwrap_or_default(),
            uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default(),
            uri.path()
        );
        let started = std::time::Instant::now();
        let result = next.handle(request);
        let ms = started.elapsed().as_millis();
        match &result {
            Ok(r) => tracing::trace!("HTTP {method} {url} → {} in {ms} ms", r.status().as_u16()),
            Err(e) => tracing::trace!("HTTP {method} {url} → {e} in {ms} ms"),
        }
        result
    }
}

/// One agent for the process: TLS always verified, bounded timeouts.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .middleware(Trace)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_per_read(Some(read_timeout()))
        .timeout_per_write(Some(read_timeout()))
        .http_status_as_error(false)
        // Redirects are followed by [`get`], which names where they lead.
        .max_redirects(0)
        .user_agent(concat!("imagepipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// Redirects [`get`] follows before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// `GET url`, following up to [`MAX_REDIRECTS`] redirects to `http`/`https`
/// URLs; a redirect anywhere else (`file://`, `ftp://`) is an error naming it.
pub fn get(url: &str) -> Result<ureq::http::Response<ureq::Body>, String> {
    let agent = agent();
    let mut current = url.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        let resp = agent.get(&current).call().map_err(|e| e.to_string())?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| format!("HTTP {} without a Location", resp.status()))?
            .to_owned();
        current = resolve(&current, &location);
        if !(current.starts_with("http://") || current.starts_with("https://")) {
            return Err(format!(
                "redirected to `{current}`: only http and https redirects are followed"
            ));
        }
    }
    Err(format!(
        "more than {MAX_REDIRECTS} redirects (last: {current})"
    ))
}

/// A `Location` resolved against the URL that sent it.
fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let host = rest.split('/').next().unwrap_or(rest);
    if location.starts_with('/') {
        format!("{scheme}://{host}{location}")
    } else {
        let dir = base.rsplit_once('/').map_or(base, |(d, _)| d);
        format!("{dir}/{location}")
    }
}

/// A reader that fails when less than [`MIN_BYTES_PER_WINDOW`] arrive in a
/// window of [`read_timeout`] (the end of the stream is never an error).
#[derive(Debug)]
pub struct Stalled<R> {
    inner: R,
    window_start: Instant,
    in_window: u64,
}

impl<R> Stalled<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            window_start: Instant::now(),
            in_window: 0,
        }
    }
}

impl<R: Read> Read for Stalled<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.in_window += n as u64;
        if n > 0 && self.window_start.elapsed() >= read_timeout() {
            if self.in_window < MIN_BYTES_PER_WINDOW {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the transfer stalled: {} bytes in {}s (at least {MIN_BYTES_PER_WINDOW} expected; IMAGEPIPE_READ_TIMEOUT sets the window)",
                        self.in_window,
                        read_timeout().as_secs()
                    ),
                ));
            }
            self.window_start = Instant::now();
            self.in_window = 0;
        }
        Ok(n)
    }
}

/// GETs a small text document (at most `limit` bytes).
pub fn get_text(url: &str, limit: u64) -> Result<String, String> {
    let resp = get(url)?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    Stalled::new(resp.into_body().into_reader())
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > limit {
        return Err(format!("response is larger than {limit} bytes"));
    }
    String::from_utf8(body).map_err(|_| "response is not UTF-8 text".to_owned())
}

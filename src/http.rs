//! Plain HTTP(S) downloads (upstream images and checksum files).

use std::io::Read;
use std::time::Duration;

/// One agent for the process: TLS always verified, bounded timeouts.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .user_agent(concat!("imagepipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent()
}

/// GETs a small text document (at most `limit` bytes).
pub fn get_text(url: &str, limit: u64) -> Result<String, String> {
    let resp = agent().get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let mut body = Vec::new();
    resp.into_body()
        .into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    if body.len() as u64 > limit {
        return Err(format!("response is larger than {limit} bytes"));
    }
    String::from_utf8(body).map_err(|_| "response is not UTF-8 text".to_owned())
}

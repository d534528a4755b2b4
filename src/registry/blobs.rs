//! Blobs: existence, cross-repository mounts, streamed downloads and
//! uploads (one streamed `PUT`, or resumable chunks).

use std::io::Read;
use std::time::Instant;

use ureq::Body;
use ureq::http::Response;

use super::client::{Client, Opener, RegistryError, Repository};
use super::retry::retryable_status;
use super::transport::with_auth;
use crate::oci::Digest;

impl Client {
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
                let mut body = crate::http::Stalled::new(resp.into_body().into_reader());
                std::io::copy(&mut (&mut body).take(offset), &mut std::io::sink())
                    .map_err(|e| Self::err(repo, &op, e.to_string()))?;
                return Ok(Box::new(body));
            }
            _ => return Err(Self::status_err(repo, &op, resp)),
        }
        Ok(Box::new(crate::http::Stalled::new(
            resp.into_body().into_reader(),
        )))
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
        let once = self.policy.single_attempt();
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
        let once = self.policy.single_attempt();
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let len = chunk.min(size - offset);
            let url = location.clone();
            let result = self.send_with(once, repo, op, &Self::push(repo), &|a, auth| {
                let mut part = open(offset).map_err(ureq::Error::Io)?.take(len);
                chunk_request(with_auth(a.patch(&url), auth), offset, len)
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
        self.close_upload(repo, op, &location, digest)
    }

    /// `PUT <upload>?digest=`: closes a session whose bytes are all sent.
    fn close_upload(
        &self,
        repo: &Repository,
        op: &str,
        location: &str,
        digest: &Digest,
    ) -> Result<(), RegistryError> {
        let put = with_digest(location, digest);
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

    /// Whether the repository takes a push: an upload session is opened
    /// (the request a push starts with, with push credentials) and
    /// cancelled at once; nothing is written.
    pub fn check_push(&self, repo: &Repository) -> Result<(), RegistryError> {
        let (location, _) = self.start_upload(repo, "push check")?;
        let _ = self.send(repo, "cancel upload", &Self::push(repo), &|a, auth| {
            with_auth(a.delete(&location), auth).call()
        });
        Ok(())
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
}

/// A `PATCH` of `len` bytes at `offset` of an upload session (the OCI chunked upload).
fn chunk_request(
    req: ureq::RequestBuilder<ureq::typestate::WithBody>,
    offset: u64,
    len: u64,
) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
    req.header("Content-Type", "application/octet-stream")
        .header("Content-Range", &format!("{offset}-{}", offset + len - 1))
        .header("Content-Length", &len.to_string())
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

/// A blob upload fed while the blob is still being written (compressed):
/// one session, `PATCH` requests of [`STREAM_CHUNK`] bytes (with
/// `Content-Range` and `Content-Length`, as the OCI distribution spec's
/// chunked upload has them) sent as each chunk fills, then `PUT ?digest=`
/// once the digest is known. At most two chunks per target are in memory.
/// It is an optimisation: when a request fails, the stream stops and the
/// caller uploads the blob from the store afterwards, with the resumable,
/// retried upload above.
pub struct StreamedUpload {
    buf: Vec<u8>,
    chunk: usize,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    patch: Option<std::thread::JoinHandle<Result<String, RegistryError>>>,
    client: std::sync::Arc<Client>,
    repo: Repository,
}

/// Bytes per `PATCH` of a streamed upload (unless the repository's
/// `chunk_size`, or the registry's minimum, is larger).
pub const STREAM_CHUNK: u64 = 8 << 20;

impl Client {
    /// Opens a session; [`StreamedUpload::write`] feeds it.
    pub fn start_streamed_upload(
        self: &std::sync::Arc<Self>,
        repo: &Repository,
    ) -> Result<StreamedUpload, RegistryError> {
        let op = "streamed blob upload";
        let (location, min_chunk) = self.start_upload(repo, op)?;
        let chunk = STREAM_CHUNK
            .max(repo.chunk_size.unwrap_or(0))
            .max(min_chunk.unwrap_or(0));
        // One chunk waits while the previous one is sent.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(0);
        let client = self.clone();
        let r = repo.clone();
        let patch = std::thread::spawn(move || {
            let mut location = location;
            let mut offset = 0u64;
            // One attempt each: a failed chunk ends the stream.
            let once = client.policy.single_attempt();
            for part in rx {
                let len = part.len() as u64;
                let url = location.clone();
                let resp = client.send_with(once, &r, op, &Self::push(&r), &|a, auth| {
                    chunk_request(with_auth(a.patch(&url), auth), offset, len).send(&part[..])
                })?;
                if resp.status().as_u16() != 202 {
                    return Err(Self::status_err(&r, op, resp));
                }
                if let Some(l) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
                    location = r.resolve(l);
                }
                offset += len;
            }
            Ok(location)
        });
        Ok(StreamedUpload {
            buf: Vec::new(),
            chunk: usize::try_from(chunk).unwrap_or(usize::MAX),
            tx: Some(tx),
            patch: Some(patch),
            client: self.clone(),
            repo: repo.clone(),
        })
    }
}

impl std::fmt::Debug for StreamedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamedUpload({})", self.repo)
    }
}

impl StreamedUpload {
    /// Hands bytes on; `false` once the upload has stopped (the rest is dropped).
    pub fn write(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            let n = (self.chunk - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == self.chunk && !self.send() {
                return false;
            }
        }
        true
    }

    fn send(&mut self) -> bool {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk));
        match &self.tx {
            Some(tx) if tx.send(part).is_ok() => true,
            _ => {
                self.tx = None;
                false
            }
        }
    }

    /// Sends the last chunk and closes the session as `digest`.
    pub fn finish(mut self, digest: &Digest) -> Result<(), RegistryError> {
        let op = format!("streamed blob upload {digest}");
        if !self.buf.is_empty() {
            self.send();
        }
        self.tx = None;
        let location = self
            .patch
            .take()
            .map(std::thread::JoinHandle::join)
            .and_then(Result::ok)
            .ok_or_else(|| Client::err(&self.repo, &op, "the upload stopped"))??;
        self.client.close_upload(&self.repo, &op, &location, digest)
    }
}

impl Drop for StreamedUpload {
    fn drop(&mut self) {
        // Not finished: stop sending, and let the request thread return.
        self.tx = None;
        if let Some(p) = self.patch.take()
            && let Ok(Err(e)) = p.join()
        {
            tracing::warn!("{e}; the blob is uploaded from the store");
        }
    }
}

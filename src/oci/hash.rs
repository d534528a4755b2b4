//! Writers and readers that hash what passes through them.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Passes writes through to `inner`, hashing and counting them.
#[derive(Debug)]
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// The digest and size of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let digest = Digest::from_hex(&hex(&self.hasher.finalize())).expect("sha256 hex");
        (digest, self.len, self.inner)
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads through `inner`, hashing and counting what was read.
#[derive(Debug)]
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    pub fn finish(self) -> (Digest, u64) {
        self.snapshot()
    }

    /// The digest and size of what was read so far.
    pub fn snapshot(&self) -> (Digest, u64) {
        (
            Digest::from_hex(&hex(&self.hasher.clone().finalize())).expect("sha256 hex"),
            self.len,
        )
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads a blob through, checking it against its descriptor: more bytes
/// than its size fail at once, and at the end of the stream a short body or
/// another digest fails, naming the expected digest. Whoever reads to the
/// end has read exactly the blob (a store serving other bytes under a
/// digest is an error, never content).
#[derive(Debug)]
pub struct VerifyingReader<R> {
    inner: HashReader<R>,
    digest: Digest,
    size: u64,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, digest: &Digest, size: u64) -> Self {
        Self {
            inner: HashReader::new(inner),
            digest: digest.clone(),
            size,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let bad = |what: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {}: {what}; the store serves other bytes under this digest (corrupt or tampered), nothing of it is used",
                    self.digest
                ),
            )
        };
        if self.inner.len > self.size {
            return Err(bad(format!("more than its {} bytes", self.size)));
        }
        if n == 0 && !buf.is_empty() {
            if self.inner.len != self.size {
                return Err(bad(format!(
                    "{} bytes instead of {}",
                    self.inner.len, self.size
                )));
            }
            let got =
                Digest::from_hex(&hex(&self.inner.hasher.clone().finalize())).expect("sha256 hex");
            if got != self.digest {
                return Err(bad(format!("its bytes hash to {got}")));
            }
        }
        Ok(n)
    }
}

/// The sha256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

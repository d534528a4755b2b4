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

/// What a [`CheckedReader`] found at odds with what it expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// More bytes than the size (reported at once).
    Longer { size: u64 },
    /// The stream ended after `len` of `size` bytes.
    Shorter { len: u64, size: u64 },
    /// The bytes hash to `got`, not to `expected`.
    Digest { got: Digest, expected: Digest },
}

/// Reads through, checking the stream against a size and, if given, a
/// digest: more bytes than the size fail at once; at the end of the stream
/// a short read or another digest fail, with the error `explain` makes of
/// it. Whoever reads to the end has read exactly the expected bytes.
pub struct CheckedReader<R> {
    inner: HashReader<R>,
    size: u64,
    digest: Option<Digest>,
    explain: Box<dyn Fn(Mismatch) -> io::Error + Send>,
}

impl<R: Read> CheckedReader<R> {
    pub fn new(
        inner: R,
        size: u64,
        digest: Option<&Digest>,
        explain: impl Fn(Mismatch) -> io::Error + Send + 'static,
    ) -> Self {
        Self {
            inner: HashReader::new(inner),
            size,
            digest: digest.cloned(),
            explain: Box::new(explain),
        }
    }

    /// A blob of a store, against its descriptor's digest and size.
    pub fn blob(inner: R, digest: &Digest, size: u64) -> Self {
        let d = digest.clone();
        Self::new(inner, size, Some(digest), move |m| {
            let what = match m {
                Mismatch::Longer { size } => format!("more than its {size} bytes"),
                Mismatch::Shorter { len, size } => format!("{len} bytes instead of {size}"),
                Mismatch::Digest { got, .. } => format!("its bytes hash to {got}"),
            };
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {d}: {what}; the store serves other bytes under this digest (corrupt or tampered), nothing of it is used"
                ),
            )
        })
    }
}

impl<R: Read> Read for CheckedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let size = self.size;
        if self.inner.len > size {
            return Err((self.explain)(Mismatch::Longer { size }));
        }
        if n == 0 && !buf.is_empty() {
            let (got, len) = self.inner.snapshot();
            if len != size {
                return Err((self.explain)(Mismatch::Shorter { len, size }));
            }
            if let Some(expected) = self.digest.clone().filter(|e| *e != got) {
                return Err((self.explain)(Mismatch::Digest { got, expected }));
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

//! What can go wrong making a source local, each with what to do about it.

use std::path::{Path, PathBuf};

use crate::io_reason::io_reason;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file or directory could not be read or written.
    #[error("{}: {}", .path.display(), io_reason(.source))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A FIFO, device or socket: reading it could block forever or never end.
    #[error("{}: not a regular file or directory (a FIFO, device or socket is never read as a source)", .path.display())]
    NotRegular { path: PathBuf },
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "checksum mismatch for {url}: expected {algorithm} {expected}, got {actual} ({size} bytes); the download was discarded"
    )]
    Checksum {
        url: String,
        algorithm: &'static str,
        expected: String,
        actual: String,
        size: u64,
    },
    #[error("checksums_url {url}: {reason}")]
    Sums { url: String, reason: String },
    #[error("decompressing {name} ({algo}): {source}")]
    Decompress {
        name: String,
        algo: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: program not found (is it installed and on PATH?)")]
    NotInstalled { what: String },
    #[error(
        "the Packer variable `{var}` comes from the environment variable `{env}`, which is not set (`packer.runtime_vars`): set it in the job, e.g. `{env}=$(curl -s https://api.ipify.org)/32`"
    )]
    RuntimeVar { var: String, env: String },
    #[error("{url}: {reason}")]
    Lock { url: String, reason: String },
    #[error("the Packer variable `{var}` {reason}")]
    PackerVar { var: String, reason: String },
    #[error("{what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed ({status})")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
    },
    /// A builder left no artifact, or several without `artifact:` naming one.
    #[error("{0}")]
    Artifact(String),
    /// A Packer manifest that does not say what was built.
    #[error("{}: {reason}", .path.display())]
    PackerManifest { path: PathBuf, reason: String },
    /// A declared input pattern that cannot be used.
    #[error("input `{pattern}`: {reason}")]
    Input { pattern: String, reason: String },
}

impl SourceError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

//! The error type commands return, how a command ended, and the one place
//! both become the process exit code.

use crate::catalog::CatalogError;
use crate::release::ReleaseError;

/// How a command ended; the one place that turns it into the process exit
/// code (SPEC: 0 success, 1 the operation failed, 2 invalid input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Success,
    /// The operation was tried and failed, partly or wholly.
    Failed,
    /// Invalid input: catalog, arguments, release tag.
    Invalid,
}

impl ExitStatus {
    pub fn failed_if(failed: bool) -> Self {
        if failed { Self::Failed } else { Self::Success }
    }

    pub fn code(self) -> u8 {
        match self {
            Self::Success => 0,
            Self::Failed => 1,
            Self::Invalid => 2,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(s: ExitStatus) -> Self {
        Self::from(s.code())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// Arguments or settings that cannot work, with the fix in the message.
    #[error("{0}")]
    Usage(String),
    /// The operation was tried and failed.
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::Catalog(_) | Self::Release(_) | Self::Usage(_) => ExitStatus::Invalid,
            Self::Failed(_) => ExitStatus::Failed,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

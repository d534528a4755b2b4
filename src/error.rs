//! The error type commands return, and the one place that maps errors to exit codes.

use crate::catalog::CatalogError;
use crate::release::ReleaseError;

/// Exit code: the operation failed (partly or wholly).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: invalid input (catalog, arguments, release tag).
pub const EXIT_INVALID: u8 = 2;

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
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Catalog(_) | Self::Release(_) | Self::Usage(_) => EXIT_INVALID,
            Self::Failed(_) => EXIT_FAILED,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

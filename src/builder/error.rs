//! Why a build failed, with the image it was for.

use std::path::PathBuf;

use crate::oci::Digest;
use crate::source::error::SourceError;
use crate::store::StoreError;
use crate::template::{RenderError, TemplateError};

#[derive(Debug, thiserror::Error)]
#[error("{image}: {kind}")]
pub struct BuildError {
    pub image: String,
    #[source]
    pub kind: BuildErrorKind,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildErrorKind {
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Reading or writing the store (or a layer's input) failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The material is not what the format needs (a directory for a disk, a text file, a vmdk…).
    #[error("{0}")]
    Unusable(String),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(
        "the immutable tag {tag} already points at {existing} but this build gave {built}; immutable tags are never overwritten (the recipe is not reproducible, or pass --force)"
    )]
    NotReproducible {
        tag: String,
        existing: Digest,
        built: Digest,
    },
    #[error("provenance: {0}")]
    Provenance(#[source] StoreError),
}

impl BuildErrorKind {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

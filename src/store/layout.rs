//! The OCI image layout: `oci-layout`, `index.json`, `blobs/sha256/…`.
//!
//! One layout directory per image repository (`<store>/<image-name>`), so that
//! tags such as `latest` of different images never collide; each is readable
//! as `oci:<store>/<image-name>:<tag>` by skopeo and umoci.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The annotation that names a tag in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// An existing layout, or `None` when the directory holds none.
    pub fn open_existing(root: &Path) -> Option<Self> {
        root.join("oci-layout").is_file().then(|| Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The digest a tag points at, if the layout has that tag.
    pub fn resolve_tag(&self, tag: &str) -> std::io::Result<Option<String>> {
        let index = self.read_index()?;
        Ok(index["manifests"].as_array().and_then(|ms| {
            ms.iter()
                .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
                .and_then(|m| m["digest"].as_str().map(str::to_owned))
        }))
    }

    fn read_index(&self) -> std::io::Result<Value> {
        let bytes = std::fs::read(self.root.join("index.json"))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

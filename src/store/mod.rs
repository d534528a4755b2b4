//! Image stores: the OCI image layout (the embedded default) and, through the
//! same questions, registries.

pub mod layout;

use std::path::Path;

use crate::catalog::{Target, TargetKind};
use crate::plan::{TagState, TargetState};

/// A directory as users see it: relative to the working directory when it
/// lies below it (`examples/quickstart/.imagepipe/store/x`), else absolute.
pub fn shown(dir: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| dir.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| dir.to_path_buf())
        .display()
        .to_string()
}

/// Target state as known without the network: layout targets are read,
/// registries are reported as unknown.
#[derive(Debug)]
pub struct OfflineState<'a> {
    pub base: &'a Path,
}

impl TargetState for OfflineState<'_> {
    fn tag_state(&self, target: &Target, image: &str, tag: &str) -> TagState {
        match &target.kind {
            TargetKind::Layout { path } => {
                match layout::Layout::open_existing(&self.base.join(path).join(image)) {
                    Some(l) if l.resolve_tag(tag).ok().flatten().is_some() => TagState::Present,
                    _ => TagState::Absent,
                }
            }
            TargetKind::Registry { .. } | TargetKind::Cloud { .. } => TagState::Unknown,
        }
    }
}

//! Image stores: the OCI image layout (the embedded default) and, through the
//! same questions, registries.

pub mod layout;

use std::path::Path;

use crate::catalog::{Target, TargetKind};
use crate::plan::{TagState, TargetState};

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

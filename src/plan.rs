//! The plan: per image × target, the tags, the recipe hash and what to do.
//!
//! [`plan`] is a pure function of the catalog, the run context, the recipes and
//! a snapshot of target state; `--format json` prints its value as is.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Catalog, Image, Target};
use crate::recipe::{Recipe, RunContext, TagValues};
use crate::template::{RenderError, Template};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Nothing holds this recipe yet: build it.
    Build,
    /// Another target or the local store holds it: copy, no rebuild.
    Copy,
    /// The target already holds the immutable tag.
    Skip,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Copy => "copy",
            Self::Skip => "skip",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct PlanItem {
    pub image: String,
    pub target: String,
    /// Where the image goes: `host/namespace/name` or `oci:<dir>`.
    pub repository: String,
    /// The immutable tag; `None` when the identity is only known after the build.
    pub tag: Option<String>,
    /// Mutable tags moved after every target holds the immutable one.
    pub mutable_tags: Vec<String>,
    /// Full recipe hash (sha256 hex); `None` when only known after the build.
    pub hash: Option<String>,
    pub action: Action,
    pub reason: String,
    pub platforms: Vec<String>,
    pub format: &'static str,
    pub kubernetes: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The release tag, for release plans.
    pub release: Option<String>,
    pub items: Vec<PlanItem>,
}

/// What is known about a target's contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagState {
    Present,
    Absent,
    /// Not looked up (e.g. an offline plan against a registry).
    Unknown,
}

/// Read access to target state, answered by store backends.
pub trait TargetState {
    fn tag_state(&self, target: &Target, image: &str, tag: &str) -> TagState;
}

/// An image's resolved identity, input to [`plan`].
#[derive(Clone, Debug)]
pub struct Identity {
    pub recipe: Recipe,
    pub tag: Option<String>,
    pub mutable_tags: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("image `{image}`: tag `{template}`: {error}")]
pub struct TagError {
    pub image: String,
    pub template: String,
    pub error: RenderError,
}

/// Renders an image's tags for a recipe.
pub fn identity(
    catalog: &Catalog,
    image: &Image,
    ctx: &RunContext,
    recipe: Recipe,
) -> Result<Identity, TagError> {
    let vars: Vec<&str> = catalog.variables.iter().map(|v| v.name.as_str()).collect();
    let values = TagValues::new(image, ctx, &recipe.hash);
    let mut rendered = Vec::new();
    for raw in image.tag_templates(&catalog.defaults) {
        // Templates were checked by validation; a parse error here is a bug upstream of us.
        let t = Template::parse(raw, &vars).map_err(|e| TagError {
            image: image.name.value.clone(),
            template: raw.value.clone(),
            error: RenderError::Missing {
                name: raw.value.clone(),
                why: e.to_string(),
            },
        })?;
        let tag = t.render(|p| values.lookup(p)).map_err(|error| TagError {
            image: image.name.value.clone(),
            template: raw.value.clone(),
            error,
        })?;
        rendered.push(tag);
    }
    let mut iter = rendered.into_iter();
    let immutable = iter.next();
    let mutable_tags = iter.collect();
    let tag = if recipe.unpinned.is_some() {
        None
    } else {
        immutable
    };
    Ok(Identity {
        recipe,
        tag,
        mutable_tags,
    })
}

/// Decides the action for every (image, target) pair.
pub fn plan(
    images: &[(&Image, Identity)],
    targets: &[&Target],
    build_store: &Target,
    ctx: &RunContext,
    state: &dyn TargetState,
) -> Plan {
    let mut items = Vec::new();
    for (image, id) in images {
        let chosen: Vec<&Target> = targets
            .iter()
            .copied()
            .filter(|t| image.goes_to(t))
            .collect();
        // State of every target (and the build store), looked up once.
        let mut holders: BTreeMap<&str, TagState> = BTreeMap::new();
        if let Some(tag) = &id.tag {
            for t in chosen.iter().copied().chain(std::iter::once(build_store)) {
                holders
                    .entry(t.name.as_str())
                    .or_insert_with(|| state.tag_state(t, &image.name, tag));
            }
        }
        for target in &chosen {
            let (action, reason) = decide(id, target, build_store, &holders);
            items.push(PlanItem {
                image: image.name.value.clone(),
                target: target.name.value.clone(),
                repository: target.repository(&image.name),
                tag: id.tag.clone(),
                mutable_tags: id.mutable_tags.clone(),
                hash: (id.recipe.unpinned.is_none()).then(|| id.recipe.hash.clone()),
                action,
                reason,
                platforms: image
                    .platforms
                    .iter()
                    .map(|p| p.platform.to_string())
                    .collect(),
                format: image.format.as_str(),
                kubernetes: ctx
                    .release
                    .as_ref()
                    .filter(|_| image.kubernetes)
                    .map(ToString::to_string),
            });
        }
    }
    Plan {
        release: ctx.release.as_ref().map(|r| r.tag.clone()),
        items,
    }
}

fn decide(
    id: &Identity,
    target: &Target,
    build_store: &Target,
    holders: &BTreeMap<&str, TagState>,
) -> (Action, String) {
    if let Some(why) = &id.recipe.unpinned {
        return (
            Action::Build,
            format!("{why}; the tag is derived from the built content"),
        );
    }
    let tag = id.tag.as_deref().unwrap_or_default();
    match holders.get(target.name.as_str()) {
        Some(TagState::Present) => {
            return (
                Action::Skip,
                format!("up to date: {tag} is on {}", target.name.value),
            );
        }
        Some(TagState::Unknown) if target.kind.is_cloud() => {
            let how = match &target.kind {
                crate::catalog::TargetKind::Cloud {
                    exists: Some(_), ..
                } => "existence not known (offline, or the check did not answer)",
                _ => "no `exists` check for this region",
            };
            return (Action::Build, format!("{how}: Packer builds it here"));
        }
        Some(TagState::Absent) if target.kind.is_cloud() => {
            return (
                Action::Build,
                format!("{tag} does not exist in this region: Packer builds it here"),
            );
        }
        _ => {}
    }
    let other = holders
        .iter()
        .find(|(name, st)| **name != target.name.as_str() && **st == TagState::Present)
        .map(|(name, _)| *name);
    match other {
        Some(name) if name == build_store.name.as_str() => {
            (Action::Copy, "built in the local store".into())
        }
        Some(name) => (Action::Copy, format!("target {name} has it")),
        None if holders.get(target.name.as_str()) == Some(&TagState::Unknown) => (
            Action::Build,
            "registry state unknown (offline or unreachable)".into(),
        ),
        None => (Action::Build, "no target has this recipe yet".into()),
    }
}

//! The plan: per image × target, every tag and what to do about it.
//!
//! [`plan`] is a pure function of the images' identities, the targets and a
//! snapshot of what the stores hold ([`State`], gathered once by
//! [`crate::state::gather`]); `--format json` prints its value as is, and
//! `publish` executes exactly its items.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Catalog, Image, Target};
use crate::oci::Digest;
use crate::recipe::{Recipe, RunContext, TagValues};
use crate::release::Release;
use crate::template::{RenderError, Template};

/// What happens to the immutable tag of an image on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// No store holds this recipe yet: build it, then copy it here.
    Build,
    /// Another target or the local store holds it: copy, no rebuild.
    Copy,
    /// The immutable tag is here; some mutable tag must move.
    Tag,
    /// The immutable tag is here and every mutable tag is as it should be.
    Skip,
    /// The immutable tag is here; its mutable tags wait for `imagepipe verify`
    /// to pass for this digest (the image requires verification).
    Verify,
    /// Nothing is done: what the stores hold contradicts the image's identity
    /// (targets name different digests under the immutable tag, or the copy
    /// source holds an image of another recipe). `publish` fails the item with
    /// the reason; `--force` rebuilds and replaces.
    Conflict,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "build",
            Self::Copy => "copy",
            Self::Tag => "tag",
            Self::Skip => "skip",
            Self::Verify => "verify",
            Self::Conflict => "conflict",
        }
    }
}

/// Why an item has its action: a stable code for machines, next to the
/// human `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReasonCode {
    /// The target holds the immutable tag, and every mutable tag is current.
    UpToDate,
    /// The target holds the immutable tag; mutable tags are missing or behind.
    TagsBehind,
    /// The local store holds the image.
    InLocalStore,
    /// Another target holds the image.
    OnOtherTarget,
    /// No store holds the recipe.
    NewRecipe,
    /// The recipe does not pin its inputs: it is built every run.
    Unpinned,
    /// The target's state could not be read, and no store is known to hold it.
    StateUnknown,
    /// A cloud region that does not have the machine image (or cannot tell).
    RegionBuild,
    /// The local store lacks the image another target holds: it is a cache
    /// of this runner's builds, not a place the image must be copied to.
    LocalCache,
    /// The image requires verification and this digest has not passed it.
    NotVerified,
    /// Targets hold different digests under the immutable tag.
    TargetsDisagree,
    /// The only stores holding the immutable tag hold an image whose recipe
    /// annotation is not this recipe's: it is never spread.
    ForeignRecipe,
}

/// What happens to one mutable tag on a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagAction {
    /// Already at this image.
    Keep,
    /// Move it here (once every target holds the immutable tag).
    Move,
    /// Leave it: it points at a newer release, or this is a pre-release.
    Hold,
    /// Cannot tell whether moving it goes forward (what it points at could
    /// not be read): not moved, and the target fails.
    Blocked,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct TagPlan {
    pub tag: String,
    pub action: TagAction,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PlanItem {
    pub image: String,
    pub target: String,
    /// The target's kind: `layout`, `registry` or `cloud`.
    pub target_kind: &'static str,
    /// Where the image goes: `host/namespace/name` or `oci:<dir>`.
    #[serde(skip)]
    pub repository: String,
    /// What the immutable tag will be called there: `host/namespace/name:tag`
    /// (`oci:<dir>:tag`; a region's `provider:region`; without a tag when it
    /// comes from the built content).
    pub reference: String,
    /// The immutable tag; `None` when the identity is only known after the build.
    pub tag: Option<String>,
    /// The mutable tags, in template order.
    pub mutable_tags: Vec<String>,
    /// What happens to each mutable tag.
    pub tags: Vec<TagPlan>,
    /// Full recipe hash (sha256 hex); `None` when only known after the build.
    pub hash: Option<String>,
    pub action: Action,
    pub reason_code: ReasonCode,
    pub reason: String,
    /// For `copy`: the store to copy from (a target name, or the local store's).
    pub source: Option<String>,
    /// The digest the immutable tag names, where some store already holds it.
    pub digest: Option<Digest>,
    /// Whether this target holds the immutable tag now.
    pub present: bool,
    pub platforms: Vec<String>,
    pub format: &'static str,
    pub kubernetes: Option<String>,
    /// The image requires verification: its mutable tags wait for `imagepipe verify`.
    pub requires_verification: bool,
    /// A cloud region that has the machine image: its id, as the region's
    /// existence check printed it.
    pub machine_image: Option<String>,
    /// Why this target's state could not be read (`None`: it was read, or
    /// not looked up on purpose, as offline). `plan` and `publish` fail on
    /// it for the targets a run selects.
    pub unreadable: Option<String>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Plan {
    /// The version of this JSON's shape ([`crate::schema_version::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// The release tag, for release plans.
    pub release: Option<String>,
    /// The store builds go into (its target name).
    pub build_store: String,
    pub items: Vec<PlanItem>,
}

/// How much of the outside world to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Layouts and registries.
    Online,
    /// Layouts only: registries are reported as unknown.
    Offline,
}

/// Whether a store holds an image's immutable tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Held, with its digest (cloud regions report no digest).
    Present(Option<Digest>),
    Absent,
    /// Not read: offline, not looked up, or a tag known only after the build.
    Unknown(String),
    /// Reading it failed (unreachable, refused credentials, an error): the
    /// text says why. `plan` fails on it for the targets a run selects.
    Unreadable(String),
}

/// What a mutable tag points at on a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Current {
    Absent,
    /// At `digest`; `kubernetes` is the release of the image there, if it has one.
    At {
        digest: Digest,
        kubernetes: Option<String>,
    },
    Unknown(String),
}

/// One store's view of one image.
#[derive(Clone, Debug)]
pub struct StoreState {
    pub immutable: Presence,
    /// Mutable tag → what it points at (tags not looked up are absent from the map).
    pub mutable: BTreeMap<String, Current>,
    /// For images that require verification: what the attestations of the
    /// immutable tag's digest here say (`None`: none, or not read).
    pub verified: Option<bool>,
    /// The recipe annotation of the image under the immutable tag, read
    /// where the image may be copied from: `None` not read, `Some(None)`
    /// none recorded.
    pub recipe: Option<Option<String>>,
    /// A cloud region's machine image id, as its existence check printed it.
    pub image_id: Option<String>,
}

/// What every store holds, read once before planning.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// (image name, store name) → state.
    pub stores: BTreeMap<(String, String), StoreState>,
}

impl Plan {
    /// The items of the `selected` targets (empty: all) whose state could
    /// not be read, as `image → target: why` lines.
    pub fn unreadable(&self, selected: &[&str]) -> Vec<String> {
        self.items
            .iter()
            .filter(|i| selected.is_empty() || selected.contains(&i.target.as_str()))
            .filter_map(|i| {
                let why = i.unreadable.as_ref()?;
                Some(format!(
                    "{} → {}: its state cannot be read: {why}",
                    i.image, i.target
                ))
            })
            .collect()
    }
}

impl State {
    pub fn get(&self, image: &str, store: &str) -> Option<&StoreState> {
        self.stores.get(&(image.to_owned(), store.to_owned()))
    }

    fn presence(&self, image: &str, store: &str) -> Presence {
        self.get(image, store).map_or_else(
            || Presence::Unknown("not looked up".into()),
            |s| s.immutable.clone(),
        )
    }
}

/// An image's resolved identity, input to [`plan`].
#[derive(Clone, Debug)]
pub struct Identity {
    pub recipe: Recipe,
    pub tag: Option<String>,
    pub mutable_tags: Vec<String>,
    /// The mutable tags that pre-releases move too (`prerelease_tags`).
    pub prerelease_tags: Vec<String>,
    /// `verify.required`: mutable tags move only for verified digests.
    pub requires_verification: bool,
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
    let values = TagValues::new(&image.facts(), ctx, &recipe.hash);
    let opted_in = image.prerelease_templates(&catalog.defaults);
    let mut rendered = Vec::new();
    let mut prerelease_tags = Vec::new();
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
        if opted_in.iter().any(|o| o.value == raw.value) {
            prerelease_tags.push(tag.clone());
        }
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
        prerelease_tags,
        requires_verification: image
            .verification(&catalog.defaults)
            .is_some_and(|v| v.required),
    })
}

/// Whether a mutable tag should move to an image of release `ours` (and
/// digest `digest`, when known), given what it points at now. The one rule
/// both the plan and the executor's last check use: a tag moves only
/// forward, pre-releases move only tags that opt in, and a tag already at
/// the image is left alone.
pub fn mutable_decision(
    ours: Option<&Release>,
    prerelease_ok: bool,
    digest: Option<&Digest>,
    current: Option<&Current>,
) -> (TagAction, String) {
    if let Some(r) = ours.filter(|r| r.is_prerelease())
        && !prerelease_ok
    {
        return (
            TagAction::Hold,
            format!(
                "{} is a pre-release; this tag does not move for pre-releases (list its template in `prerelease_tags` to opt in)",
                r.kubernetes()
            ),
        );
    }
    match current {
        None => (TagAction::Move, "not looked up".into()),
        Some(Current::Absent) => (TagAction::Move, "missing".into()),
        Some(Current::Unknown(e)) if ours.is_some() => (
            TagAction::Blocked,
            format!(
                "what it points at could not be read ({e}): a release tag moves only when it is known to move forward"
            ),
        ),
        Some(Current::Unknown(e)) => (
            TagAction::Move,
            format!("state unknown ({e}); checked again before it moves"),
        ),
        Some(Current::At { digest: d, .. }) if Some(d) == digest => {
            (TagAction::Keep, "already at this image".into())
        }
        Some(Current::At { kubernetes, .. }) => {
            let theirs = kubernetes.as_deref().and_then(|k| Release::parse(k).ok());
            match (ours, theirs) {
                (Some(o), Some(t)) if o.precedence(&t) == std::cmp::Ordering::Less => (
                    TagAction::Hold,
                    format!(
                        "points at {}, newer than {}: tags only move forward",
                        t.kubernetes(),
                        o.kubernetes()
                    ),
                ),
                (Some(_), Some(t)) => (
                    TagAction::Move,
                    format!("behind: points at {}", t.kubernetes()),
                ),
                (Some(_), None) => (
                    TagAction::Hold,
                    "points at an image with no release recorded (not an imagepipe release build): left alone; move or delete it by hand".into(),
                ),
                _ => (TagAction::Move, "points at another image".into()),
            }
        }
    }
}

/// Decides the action for every (image, target) pair.
pub fn plan(
    images: &[(&Image, Identity)],
    targets: &[&Target],
    build_store: &Target,
    ctx: &RunContext,
    state: &State,
) -> Plan {
    let mut items = Vec::new();
    for (image, id) in images {
        let release = ctx.release.as_ref().filter(|_| image.kubernetes);
        let chosen: Vec<&Target> = targets
            .iter()
            .copied()
            .filter(|t| image.goes_to(t))
            .collect();
        // Which store already holds the image: the local store first, then
        // the targets in catalog order (the cheapest source first); one whose
        // image is of another recipe is never a source.
        let stores = || {
            std::iter::once(build_store)
                .chain(chosen.iter().copied())
                .filter(|t| !t.kind.is_cloud())
        };
        let recipe_of = |t: &Target| {
            state
                .get(&image.name, &t.name)
                .and_then(|s| s.recipe.clone())
        };
        let ours = |t: &&Target| {
            recipe_of(t).is_none_or(|r| r.as_deref() == Some(id.recipe.hash.as_str()))
        };
        let holder =
            stores()
                .filter(ours)
                .find_map(|t| match state.presence(&image.name, &t.name) {
                    Presence::Present(d) => Some((t, d)),
                    _ => None,
                });
        // A store holding an image of another recipe under the tag, or
        // stores (the local one included) naming different digests: the
        // image is in conflict everywhere, and nothing of it is spread.
        let foreign = stores()
            .filter(|t| !ours(t))
            .find(|t| matches!(state.presence(&image.name, &t.name), Presence::Present(_)));
        let conflict = match foreign {
            Some(f) => Some((
                ReasonCode::ForeignRecipe,
                format!(
                    "{} holds the immutable tag with an image whose recipe is {} rather than {}: an image imagepipe did not build from this recipe is under the immutable tag; it is not copied, and no mutable tag moves to it (remove that tag, or pass --force to rebuild and replace it)",
                    f.name.value,
                    recipe_of(f).flatten().as_deref().unwrap_or("not recorded"),
                    id.recipe.hash
                ),
            )),
            None => disagreement(&stores().collect::<Vec<_>>(), &image.name, state),
        };
        for target in &chosen {
            let here = state.presence(&image.name, &target.name);
            let (action, code, reason, source) = match &conflict {
                Some((code, why)) if id.tag.is_some() && !target.kind.is_cloud() => {
                    (Action::Conflict, *code, why.clone(), None)
                }
                _ => decide(id, target, build_store, &here, holder.clone()),
            };
            let present = matches!(here, Presence::Present(_));
            let digest = match &here {
                Presence::Present(Some(d)) => Some(d.clone()),
                _ => holder.as_ref().and_then(|(_, d)| d.clone()),
            };
            let tags = if code == ReasonCode::LocalCache {
                id.mutable_tags
                    .iter()
                    .map(|t| TagPlan {
                        tag: t.clone(),
                        action: TagAction::Keep,
                        reason: "the local store does not hold the image".into(),
                    })
                    .collect()
            } else if target.kind.is_cloud() || id.tag.is_none() {
                id.mutable_tags
                    .iter()
                    .map(|t| TagPlan {
                        tag: t.clone(),
                        action: TagAction::Move,
                        reason: "after the build".into(),
                    })
                    .collect()
            } else {
                let current = state.get(&image.name, &target.name);
                id.mutable_tags
                    .iter()
                    .map(|t| {
                        let (action, reason) = mutable_decision(
                            release,
                            id.prerelease_tags.contains(t),
                            digest.as_ref(),
                            current.and_then(|s| s.mutable.get(t)),
                        );
                        TagPlan {
                            tag: t.clone(),
                            action,
                            reason,
                        }
                    })
                    .collect::<Vec<_>>()
            };
            let mut tags = tags;
            if conflict.is_some() {
                // No mutable tag moves to an image the stores contradict,
                // on the targets that hold it either.
                for t in tags.iter_mut().filter(|t| t.action != TagAction::Keep) {
                    t.action = TagAction::Hold;
                    t.reason = CONFLICT_HOLD.into();
                }
            }
            let gate = id
                .requires_verification
                .then(|| verification(state, &image.name.value, digest.as_ref()));
            let mut waiting = false;
            if let Some(verdict) = gate
                && verdict != Some(true)
            {
                // Every tag that is not already here waits: a `blocked` one
                // too, which the executor would otherwise look at again.
                for t in tags.iter_mut().filter(|t| t.action != TagAction::Keep) {
                    t.action = TagAction::Hold;
                    t.reason = match (verdict, &digest) {
                        (Some(false), _) => "this digest failed `imagepipe verify`: mutable tags move only for verified images".into(),
                        (_, Some(_)) => "waiting for `imagepipe verify` to pass for this digest (the image requires verification)".into(),
                        (_, None) => "after the build, once `imagepipe verify` passes (the image requires verification)".into(),
                    };
                    waiting = true;
                }
            }
            let (action, code, reason) = match action {
                Action::Skip if waiting => (
                    Action::Verify,
                    ReasonCode::NotVerified,
                    format!(
                        "{reason}; mutable tags wait for `imagepipe verify`{}",
                        if gate == Some(Some(false)) {
                            " (it failed for this digest)"
                        } else {
                            ""
                        }
                    ),
                ),
                Action::Skip if tags.iter().any(|t| t.action == TagAction::Move) => {
                    let behind: Vec<&str> = tags
                        .iter()
                        .filter(|t| t.action == TagAction::Move)
                        .map(|t| t.tag.as_str())
                        .collect();
                    (
                        Action::Tag,
                        ReasonCode::TagsBehind,
                        format!("{reason}; to move: {}", behind.join(", ")),
                    )
                }
                other => (other, code, reason),
            };
            items.push(PlanItem {
                image: image.name.value.clone(),
                target: target.name.value.clone(),
                target_kind: target.kind.as_str(),
                repository: target.repository(&image.name),
                reference: match &id.tag {
                    Some(t) if !target.kind.is_cloud() => {
                        format!("{}:{t}", target.repository(&image.name))
                    }
                    _ => target.repository(&image.name),
                },
                tag: id.tag.clone(),
                mutable_tags: id.mutable_tags.clone(),
                tags,
                hash: (id.recipe.unpinned.is_none()).then(|| id.recipe.hash.clone()),
                action,
                reason_code: code,
                reason,
                source,
                digest,
                present,
                platforms: image
                    .platforms
                    .iter()
                    .map(|p| p.platform.to_string())
                    .collect(),
                format: image.format.as_str(),
                kubernetes: release.map(ToString::to_string),
                requires_verification: id.requires_verification,
                machine_image: state
                    .get(&image.name, &target.name)
                    .and_then(|s| s.image_id.clone()),
                unreadable: match &here {
                    Presence::Unreadable(why) => Some(why.clone()),
                    _ => None,
                },
            });
        }
    }
    Plan {
        schema_version: crate::schema_version::SCHEMA_VERSION,
        release: ctx.release.as_ref().map(|r| r.tag.clone()),
        build_store: build_store.name.value.clone(),
        items,
    }
}

/// Whether the stores of an image (its targets and the local store) name
/// different digests under its immutable tag: the reason, listing each
/// digest and where it is.
fn disagreement(stores: &[&Target], image: &str, state: &State) -> Option<(ReasonCode, String)> {
    let mut seen: BTreeMap<Digest, Vec<&str>> = BTreeMap::new();
    for t in stores.iter().filter(|t| !t.kind.is_cloud()) {
        if let Presence::Present(Some(d)) = state.presence(image, &t.name) {
            let names = seen.entry(d).or_default();
            if !names.contains(&t.name.value.as_str()) {
                names.push(&t.name.value);
            }
        }
    }
    (seen.len() > 1).then(|| {
        let which: Vec<String> = seen
            .iter()
            .map(|(d, ts)| format!("{d} on {}", ts.join(", ")))
            .collect();
        (
            ReasonCode::TargetsDisagree,
            format!(
                "the targets disagree on what the immutable tag names ({}): an immutable tag names one digest; remove the wrong one (or publish with --force)",
                which.join("; ")
            ),
        )
    })
}

/// What the stores holding `digest` say of its verification: passed when
/// one of them holds a passing attestation.
fn verification(state: &State, image: &str, digest: Option<&Digest>) -> Option<bool> {
    let digest = digest?;
    let verdicts: Vec<Option<bool>> = state
        .stores
        .iter()
        .filter(|((i, _), s)| i == image && s.immutable == Presence::Present(Some(digest.clone())))
        .map(|(_, s)| s.verified)
        .collect();
    if verdicts.contains(&Some(true)) {
        Some(true)
    } else if verdicts.contains(&Some(false)) {
        Some(false)
    } else {
        None
    }
}

/// The plan of a run that pushes immutable tags only (a fan-out job, with
/// `--immutable-only`): every mutable tag that would move is held, for the
/// tags job to move on every target together.
pub fn immutable_only(mut plan: Plan) -> Plan {
    for i in &mut plan.items {
        for t in i
            .tags
            .iter_mut()
            .filter(|t| matches!(t.action, TagAction::Move | TagAction::Blocked))
        {
            t.action = TagAction::Hold;
            t.reason =
                "--immutable-only: `publish --tags-only` moves it once every target holds the image"
                    .into();
        }
        if i.action == Action::Tag {
            i.action = Action::Skip;
            i.reason = format!("{} (held: --immutable-only)", i.reason);
        }
    }
    plan
}

/// Why a mutable tag of an image in conflict does not move (`--force`
/// moves it, to the image it builds).
const CONFLICT_HOLD: &str = "not moved: the stores contradict the immutable tag";

/// The plan of `publish --force`: every OCI item is built afresh and
/// copied, replacing an immutable tag that holds other bytes.
#[must_use]
pub fn forced(mut plan: Plan) -> Plan {
    for i in plan
        .items
        .iter_mut()
        .filter(|i| i.format != "machine-image")
    {
        i.action = Action::Build;
        i.reason_code = ReasonCode::NewRecipe;
        i.reason = "--force: built again, replacing what the tag holds".into();
        i.source = Some(plan.build_store.clone());
        i.digest = None;
        for t in &mut i.tags {
            if i.requires_verification {
                // The new build's digest has not been verified.
                t.action = TagAction::Hold;
                t.reason = "rebuilt by --force: mutable tags wait for `imagepipe verify` of the new digest".into();
            } else if t.action == TagAction::Keep || t.reason == CONFLICT_HOLD {
                t.action = TagAction::Move;
                t.reason = "--force: moved to the image built again".into();
            }
        }
    }
    plan
}

fn decide(
    id: &Identity,
    target: &Target,
    build_store: &Target,
    here: &Presence,
    holder: Option<(&Target, Option<Digest>)>,
) -> (Action, ReasonCode, String, Option<String>) {
    // A build's copy source is the store it is built into.
    let built_here = (!target.kind.is_cloud()).then(|| build_store.name.value.clone());
    if let Some(why) = &id.recipe.unpinned {
        return (
            Action::Build,
            ReasonCode::Unpinned,
            format!("{why}; the tag is derived from the built content"),
            built_here,
        );
    }
    let tag = id.tag.as_deref().unwrap_or_default();
    if target.kind.is_cloud() {
        return match here {
            Presence::Present(_) => (
                Action::Skip,
                ReasonCode::UpToDate,
                format!("up to date: {tag} exists in this region"),
                None,
            ),
            Presence::Absent => (
                Action::Build,
                ReasonCode::RegionBuild,
                format!("{tag} does not exist in this region: Packer builds it here"),
                None,
            ),
            Presence::Unknown(why) | Presence::Unreadable(why) => (
                Action::Build,
                ReasonCode::RegionBuild,
                format!("{why}: Packer builds it here"),
                None,
            ),
        };
    }
    if let Presence::Present(_) = here {
        return (
            Action::Skip,
            ReasonCode::UpToDate,
            format!("up to date: {tag} is on {}", target.name.value),
            None,
        );
    }
    let is_build_store = target.name.value == build_store.name.value;
    match (holder, here) {
        (Some((h, _)), _) if is_build_store && h.name.value != build_store.name.value => (
            Action::Skip,
            ReasonCode::LocalCache,
            format!(
                "the local store is a cache of this runner's builds; target {} has it",
                h.name.value
            ),
            None,
        ),
        (Some((h, _)), _) if h.name.value == build_store.name.value => (
            Action::Copy,
            ReasonCode::InLocalStore,
            "built in the local store".into(),
            Some(h.name.value.clone()),
        ),
        (Some((h, _)), _) => (
            Action::Copy,
            ReasonCode::OnOtherTarget,
            format!("target {} has it", h.name.value),
            Some(h.name.value.clone()),
        ),
        (None, Presence::Unknown(why) | Presence::Unreadable(why)) => (
            Action::Build,
            ReasonCode::StateUnknown,
            format!("registry state unknown ({why})"),
            built_here,
        ),
        (None, _) => (
            Action::Build,
            ReasonCode::NewRecipe,
            "no store has this recipe yet".into(),
            built_here,
        ),
    }
}

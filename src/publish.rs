//! Publishing: executing a [`Plan`]. For each image, build it once if the
//! plan says no store holds it, copy it to every target that lacks it (from
//! the local store, or from the target that holds it), then — only once
//! every target holds the immutable tag — move the mutable tags, forward only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{Image, Target};
use crate::oci::{Descriptor, Digest, Reference};
use crate::plan::{Action, Identity, Plan, PlanItem, ReasonCode, TagAction, mutable_decision};
use crate::registry::Client;
use crate::release::Release;
use crate::settings::Settings;
use crate::store::copy::{Copied, copy_image};
use crate::store::{self, Store, StoreError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// The image was copied here (after a build, or from another store).
    Pushed,
    /// The target already had it with the same digest.
    Present,
    Failed,
}

/// What happened to one image on one target.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Item {
    pub image: String,
    pub target: String,
    pub reference: String,
    pub tag: String,
    pub digest: Option<Digest>,
    /// The plan's action for this item.
    pub action: Action,
    pub outcome: Outcome,
    /// The store the image was copied from.
    pub from: Option<String>,
    /// Blobs uploaded, mounted and already present.
    pub copied: Option<Copied>,
    /// Mutable tags moved on this target.
    pub moved: Vec<String>,
    /// Mutable tags left where they are, with the reason.
    pub held: Vec<String>,
    pub error: Option<String>,
    /// Why it failed, for machines: the plan's reason code of a `conflict`
    /// item, or what went wrong while executing.
    pub error_code: Option<Failure>,
}

/// Why an item failed: a stable code next to the human `error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Failure {
    /// Planned as `conflict`: targets hold different digests under the immutable tag.
    TargetsDisagree,
    /// Planned as `conflict`: the only holders hold an image of another recipe.
    ForeignRecipe,
    /// The build failed.
    Build,
    /// `--tags-only`, but a selected target lacks the immutable tag.
    NotEverywhere,
    /// `--tags-only` for an image whose tag comes from its built content.
    TagFromContent,
    /// The copy source no longer holds the image, or holds another recipe's.
    SourceChanged,
    /// The target's immutable tag names other bytes (another run, or
    /// another image, took it since the plan).
    TagTaken,
    /// The immutable tag names another digest than the one the plan saw.
    DigestChanged,
    /// Reading or writing a store failed.
    Store,
    /// A mutable tag could not be moved.
    TagMove,
}

impl Failure {
    fn of_plan(code: ReasonCode) -> Self {
        if code == ReasonCode::ForeignRecipe {
            Self::ForeignRecipe
        } else {
            Self::TargetsDisagree
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Overwrite an immutable tag that holds other bytes.
    pub force: bool,
    /// Only move mutable tags; every selected target must hold the
    /// immutable tag already.
    pub tags_only: bool,
}

/// Builds an image into the build store and returns its immutable tag; the
/// stores given receive its layers while they are compressed.
pub type Builder<'a> = dyn Fn(
        &Image,
        &Identity,
        &[Arc<dyn crate::store::StreamTarget>],
    ) -> Result<String, crate::builder::BuildError>
    + 'a;

/// Builds a machine image in the cloud regions of its plan items
/// ([`crate::cloud::publish`]).
pub type Regions<'a> =
    dyn Fn(&Image, &Identity, &[(&Target, &PlanItem)]) -> Vec<crate::cloud::Record> + 'a;

/// Where the stores of a run are: the targets, the build store, the catalog's directory.
pub struct Stores<'a> {
    pub targets: &'a [&'a Target],
    pub build_store: &'a Target,
    pub base: &'a Path,
    pub client: &'a Arc<Client>,
}

impl Stores<'_> {
    fn target(&self, name: &str) -> Option<&Target> {
        if name == self.build_store.name.value {
            Some(self.build_store)
        } else {
            self.targets.iter().copied().find(|t| t.name.value == name)
        }
    }

    fn open(&self, image: &str, name: &str) -> Option<Box<dyn Store>> {
        store::open(self.target(name)?, image, self.base, self.client)
    }
}

/// A region's machine image as a publish item: the reference is Packer's
/// artifact id (or the region's, when it failed).
fn region_item(r: crate::cloud::Record, action: Action) -> Item {
    let outcome = match (&r.error, action) {
        (Some(_), _) => Outcome::Failed,
        (None, Action::Build) => Outcome::Pushed,
        (None, _) => Outcome::Present,
    };
    Item {
        image: r.image,
        target: r.target,
        reference: r
            .artifact_id
            .unwrap_or_else(|| format!("{}:{}", r.provider, r.region)),
        tag: r.name,
        digest: None,
        action,
        outcome,
        from: None,
        copied: None,
        moved: Vec::new(),
        held: Vec::new(),
        error_code: r.error.is_some().then_some(Failure::Build),
        error: r.error,
    }
}

/// How a run publishes: the executor's options and the builders' resources.
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    /// `--force`: rebuild, and replace an immutable tag that holds other bytes.
    pub force: bool,
    /// `--tags-only`: only move mutable tags.
    pub tags_only: bool,
    /// Compression threads (`IMAGEPIPE_THREADS`; 0: every core).
    pub threads: usize,
    /// Cloud regions built at once.
    pub jobs: usize,
}

/// What stops a publish before anything is built: a selected target whose
/// state the plan could not read, or a registry repository that does not
/// take a push (an upload session is opened and cancelled), for every item
/// that would write there. One line per problem.
pub fn preflight(
    s: &Settings,
    plan: &Plan,
    selected: &[&str],
    targets: &[&Target],
    tags_only: bool,
) -> Vec<String> {
    let mut problems = plan.unreadable(selected);
    let build_store = s.catalog.build_store();
    let stores = Stores {
        targets,
        build_store: &build_store,
        base: &s.catalog.base_dir(),
        client: &s.client,
    };
    let writes = |i: &&PlanItem| {
        selected.contains(&i.target.as_str())
            && i.unreadable.is_none()
            && match i.action {
                Action::Build | Action::Copy => !tags_only,
                Action::Tag => true,
                _ => false,
            }
    };
    let work: Vec<&PlanItem> = plan.items.iter().filter(writes).collect();
    let checked = crate::pool::map(&work, crate::cleanup::CONCURRENCY, |i| {
        let store = stores.open(&i.image, &i.target)?;
        store
            .check_push()
            .err()
            .map(|e| format!("{} → {}: cannot push: {e}", i.image, i.target))
    });
    problems.extend(checked.into_iter().flatten());
    problems
}

/// Executes `plan` for the `selected` targets, among the stores `targets`
/// (the copy and mount sources known to the run): images are built into
/// the catalog's build store, machine images by Packer in their regions.
pub fn run(
    s: &Settings,
    images: &[(&Image, Identity)],
    plan: &Plan,
    selected: &[&str],
    targets: &[&Target],
    run: Run,
) -> Vec<Item> {
    let (catalog, ctx) = (&s.catalog, &s.ctx);
    let store_dir = catalog.build_store_dir();
    let build_store = catalog.build_store();
    let builder =
        |image: &Image, id: &Identity, streams: &[Arc<dyn crate::store::StreamTarget>]| {
            let opts = crate::builder::Options {
                force: run.force,
                streams: streams.to_vec(),
                threads: run.threads,
            };
            crate::builder::build_image(catalog, image, id, ctx, &store_dir, opts).map(|b| b.tag)
        };
    let regions = |image: &Image, id: &Identity, planned: &[(&Target, &PlanItem)]| {
        crate::cloud::publish(catalog, image, id, ctx, planned, run.jobs)
    };
    let stores = Stores {
        targets,
        build_store: &build_store,
        base: &catalog.base_dir(),
        client: &s.client,
    };
    execute(
        plan,
        selected,
        images,
        ctx.release.as_ref(),
        &stores,
        &builder,
        &regions,
        Options {
            force: run.force,
            tags_only: run.tags_only,
        },
    )
}

/// Executes the plan's items for the `selected` targets, image by image:
/// OCI stores through [`Store`], cloud regions through `regions`. The plan
/// covers every target, so that what the other targets hold is known: a
/// copy source and a mount source.
#[allow(clippy::too_many_arguments)]
pub fn execute(
    plan: &Plan,
    selected: &[&str],
    images: &[(&Image, Identity)],
    release: Option<&Release>,
    stores: &Stores<'_>,
    build: &Builder<'_>,
    regions: &Regions<'_>,
    opts: Options,
) -> Vec<Item> {
    let mut out = Vec::new();
    for (image, id) in images {
        let all: Vec<&PlanItem> = plan
            .items
            .iter()
            .filter(|i| i.image == image.name.value)
            .collect();
        let items: Vec<&PlanItem> = all
            .iter()
            .copied()
            .filter(|i| selected.contains(&i.target.as_str()))
            .collect();
        if items.is_empty() {
            continue;
        }
        if image.format == crate::catalog::Format::MachineImage {
            // Machine images have no mutable tags to move.
            if !opts.tags_only {
                let planned: Vec<(&Target, &PlanItem)> = items
                    .iter()
                    .filter_map(|i| Some((stores.target(&i.target)?, *i)))
                    .collect();
                out.extend(regions(image, id, &planned).into_iter().map(|r| {
                    let planned = items.iter().find(|i| i.target == r.target);
                    region_item(r, planned.map_or(Action::Build, |i| i.action))
                }));
            }
            continue;
        }
        if opts.tags_only && id.tag.is_none() {
            tracing::info!(
                "{}: its tag comes from the built content, so its tags moved when it was published",
                image.name.value
            );
            continue;
        }
        let release = release.filter(|_| image.kubernetes);
        out.extend(publish_image(
            image, id, &all, &items, release, stores, build, opts,
        ));
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn publish_image(
    image: &Image,
    id: &Identity,
    all: &[&PlanItem],
    items: &[&PlanItem],
    release: Option<&Release>,
    stores: &Stores<'_>,
    build: &Builder<'_>,
    opts: Options,
) -> Vec<Item> {
    let name = image.name.as_str();
    let build_name = stores.build_store.name.value.clone();
    let mut opened: BTreeMap<String, Box<dyn Store>> = BTreeMap::new();
    for n in all
        .iter()
        .map(|i| i.target.clone())
        .chain([build_name.clone()])
    {
        if let Some(s) = stores.open(name, &n) {
            opened.insert(n, s);
        }
    }
    let mut results: Vec<Item> = items.iter().map(|i| item(i, &opened)).collect();
    let fail_all = |results: &mut Vec<Item>, code: Failure, e: &str| {
        for r in results.iter_mut() {
            fail(r, code, e.to_owned());
        }
    };
    // What the plan found contradictory stops the image: its conflict items
    // fail with the plan's reason, no tag moves anywhere.
    if all.iter().any(|i| i.action == Action::Conflict) {
        for (i, r) in items.iter().zip(results.iter_mut()) {
            if i.action == Action::Conflict {
                fail(r, Failure::of_plan(i.reason_code), i.reason.clone());
            } else {
                r.outcome = Outcome::Present;
            }
            held_by_plan(i, r);
        }
        return results;
    }
    // Build once, when the plan says so.
    let mut tag = id.tag.clone();
    let mut built = false;
    if !opts.tags_only && items.iter().any(|i| i.action == Action::Build) {
        // Registry targets that lack the image get its layers as they are
        // compressed: the upload runs alongside the build.
        let streams: Vec<Arc<dyn crate::store::StreamTarget>> = items
            .iter()
            .filter(|i| !i.present)
            .filter_map(|i| opened.get(&i.target))
            .filter_map(|s| s.stream_target())
            .collect();
        match build(image, id, &streams) {
            Ok(t) => {
                tag = Some(t);
                built = true;
            }
            Err(e) => {
                fail_all(&mut results, Failure::Build, &e.to_string());
                return results;
            }
        }
    }
    let Some(tag) = tag else {
        fail_all(
            &mut results,
            Failure::TagFromContent,
            "its tag comes from the built content: publish it without --tags-only",
        );
        return results;
    };
    for r in &mut results {
        r.tag.clone_from(&tag);
        r.reference = format!("{}:{tag}", r.reference);
    }
    let lacking = |i: &&PlanItem| !i.present && i.reason_code != ReasonCode::LocalCache;
    if opts.tags_only {
        let missing: Vec<&str> = items
            .iter()
            .filter(|i| lacking(i))
            .map(|i| i.target.as_str())
            .collect();
        if !missing.is_empty() {
            fail_all(
                &mut results,
                Failure::NotEverywhere,
                &format!(
                    "{tag} is not on every target yet (missing on {}): publish it first",
                    missing.join(", ")
                ),
            );
            return results;
        }
    }
    // Phase 1: the immutable tag onto every selected target that lacks it.
    let mut holders: BTreeSet<String> = all
        .iter()
        .filter(|i| i.present)
        .map(|i| i.target.clone())
        .collect();
    if built {
        holders.insert(build_name.clone());
    }
    for (i, r) in items.iter().zip(results.iter_mut()) {
        if !matches!(i.action, Action::Build | Action::Copy) {
            r.outcome = Outcome::Present;
            continue;
        }
        let from = i.source.clone().unwrap_or_else(|| build_name.clone());
        // A copy source must still hold our recipe (the plan read it; this
        // checks again as it copies): an image someone else put under our
        // tag is never spread.
        let copy = i.action == Action::Copy;
        let expect = Expect {
            recipe: copy.then_some(id.recipe.hash.as_str()),
            digest: i.digest.as_ref().filter(|_| copy),
        };
        match copy_one(
            &opened, &from, &i.target, &tag, expect, &holders, opts.force,
        ) {
            Ok((outcome, digest, copied)) => {
                r.outcome = outcome;
                r.digest = Some(digest);
                r.from = (outcome == Outcome::Pushed).then_some(from);
                r.copied = copied;
                holders.insert(i.target.clone());
            }
            Err((code, e)) => fail(r, code, e),
        }
    }
    // Phase 2: mutable tags, once every selected target holds the immutable tag.
    // What the plan holds back is reported without asking the registry.
    for (i, r) in items.iter().zip(results.iter_mut()) {
        held_by_plan(i, r);
    }
    let wanted = items.iter().any(|i| {
        i.tags
            .iter()
            .any(|t| matches!(t.action, TagAction::Move | TagAction::Blocked))
    });
    if !wanted {
        return results;
    }
    if let Some(failed) = results.iter().find(|r| r.outcome == Outcome::Failed) {
        tracing::warn!(
            "{name}: mutable tags ({}) not moved: {} failed",
            id.mutable_tags.join(", "),
            failed.target
        );
        return results;
    }
    // What this run built or wrote first, then the selected targets, then
    // the others: a target outside the run may hold an older digest.
    let order: Vec<&String> = built
        .then_some(&build_name)
        .into_iter()
        .chain(items.iter().map(|i| &i.target))
        .chain(holders.iter())
        .filter(|h| holders.contains(*h))
        .collect();
    let top = order
        .iter()
        .filter_map(|h| opened.get(*h))
        .find_map(|s| s.get_manifest(&Reference::tag(&tag)).ok().flatten());
    let Some((top, bytes)) = top else {
        fail_all(
            &mut results,
            Failure::SourceChanged,
            &format!("no store holds {tag}: cannot move mutable tags"),
        );
        return results;
    };
    // The plan let tags move for the digest it saw (verified, where that is
    // required): only to that one.
    let mut changed = false;
    for (i, r) in items.iter().zip(results.iter_mut()) {
        match &i.digest {
            Some(seen) if *seen != top.digest => {
                changed = true;
                if r.outcome != Outcome::Pushed {
                    fail(
                        r,
                        Failure::DigestChanged,
                        format!(
                            "{tag} names {} now, not {seen} as when planned: mutable tags not moved (plan again)",
                            top.digest
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    if changed {
        return results;
    }
    for (i, r) in items.iter().zip(results.iter_mut()) {
        if !holders.contains(&i.target) {
            continue;
        }
        r.digest = Some(top.digest.clone());
        let Some(dst) = opened.get(&i.target) else {
            continue;
        };
        for t in &i.tags {
            if matches!(t.action, TagAction::Keep | TagAction::Hold) {
                continue;
            }
            let prerelease_ok = id.prerelease_tags.contains(&t.tag);
            match move_tag(dst.as_ref(), &top, &bytes, &t.tag, release, prerelease_ok) {
                Ok(Moved::Moved) => r.moved.push(t.tag.clone()),
                Ok(Moved::Already) => {}
                Ok(Moved::Held(why)) => r.held.push(format!("{}: {why}", t.tag)),
                Err(e) => fail(r, Failure::TagMove, format!("moving {}: {e}", t.tag)),
            }
        }
    }
    results
}

/// The mutable tags the plan holds back, with why, on the item's result.
fn held_by_plan(i: &PlanItem, r: &mut Item) {
    for t in i.tags.iter().filter(|t| t.action == TagAction::Hold) {
        r.held.push(format!("{}: {}", t.tag, t.reason));
    }
}

fn fail(r: &mut Item, code: Failure, error: String) {
    r.outcome = Outcome::Failed;
    r.error = Some(error);
    r.error_code = Some(code);
}

fn item(i: &PlanItem, opened: &BTreeMap<String, Box<dyn Store>>) -> Item {
    Item {
        image: i.image.clone(),
        target: i.target.clone(),
        reference: opened
            .get(&i.target)
            .map_or_else(|| i.repository.clone(), |s| s.reference()),
        tag: i.tag.clone().unwrap_or_default(),
        digest: i.digest.clone(),
        action: i.action,
        outcome: Outcome::Failed,
        from: None,
        copied: None,
        moved: Vec::new(),
        held: Vec::new(),
        error: None,
        error_code: None,
    }
}

/// Copies `tag` from store `from` to store `to`; stores in `holders` on the
/// same registry serve as mount sources.
/// What a copy source must still hold: the plan's digest and our recipe
/// (checked as the copy starts; the plan read them before).
#[derive(Clone, Copy)]
struct Expect<'a> {
    recipe: Option<&'a str>,
    digest: Option<&'a Digest>,
}

fn copy_one(
    opened: &BTreeMap<String, Box<dyn Store>>,
    from: &str,
    to: &str,
    tag: &str,
    expect: Expect<'_>,
    holders: &BTreeSet<String>,
    force: bool,
) -> Result<(Outcome, Digest, Option<Copied>), (Failure, String)> {
    let store = |e: StoreError| match e {
        StoreError::TagTaken { .. } => (Failure::TagTaken, e.to_string()),
        e => (Failure::Store, e.to_string()),
    };
    let changed = |e: String| (Failure::SourceChanged, e);
    let src = opened
        .get(from)
        .ok_or_else(|| changed(format!("{from}: not an OCI store")))?;
    let dst = opened
        .get(to)
        .ok_or_else(|| (Failure::Store, format!("{to}: not an OCI store")))?;
    let gone = |what: &dyn std::fmt::Display| {
        changed(format!(
            "{} does not hold {what} (any more)",
            src.reference()
        ))
    };
    let top = src
        .resolve(&Reference::tag(tag))
        .map_err(store)?
        .ok_or_else(|| gone(&tag))?;
    if from == to {
        return Ok((Outcome::Pushed, top.digest, None));
    }
    if let Some(planned) = expect.digest
        && *planned != top.digest
    {
        return Err((
            Failure::DigestChanged,
            format!(
                "{}:{tag} names {} now, not {planned} as when planned: not copied (plan again)",
                src.reference(),
                top.digest
            ),
        ));
    }
    if let Some(expected) = expect.recipe {
        let (_, bytes) = src
            .get_manifest(&(&top.digest).into())
            .map_err(store)?
            .ok_or_else(|| gone(&top.digest))?;
        let m = crate::oci::Manifest::parse(&bytes).unwrap_or_default();
        let found = m.annotation(crate::oci::annotation::RECIPE);
        if found != Some(expected) {
            return Err(changed(format!(
                "{}:{tag} holds {}, whose recipe is {} rather than {expected}: an image imagepipe did not build from this recipe is under the immutable tag; it is not copied (remove that tag, or pass --force to rebuild and replace it)",
                src.reference(),
                top.digest,
                found.unwrap_or("not recorded"),
            )));
        }
    }
    match dst.resolve(&Reference::tag(tag)).map_err(store)? {
        Some(d) if d.digest == top.digest => return Ok((Outcome::Present, top.digest, None)),
        Some(d) if !force => {
            return Err((
                Failure::TagTaken,
                format!(
                    "the immutable tag {tag} already holds {}, not {}; immutable tags are never overwritten (pass --force to replace it). If another run pushed it from this recipe, {}",
                    d.digest,
                    top.digest,
                    crate::store::copy::NOT_REPRODUCIBLE
                ),
            ));
        }
        _ => {}
    }
    let mount_from: Vec<&dyn Store> = holders
        .iter()
        .filter(|h| h.as_str() != to && h.as_str() != from)
        .filter_map(|h| opened.get(h).map(AsRef::as_ref))
        .filter(|s| s.registry_repository().is_some())
        .collect();
    let claim = crate::store::copy::Claim {
        tag,
        replace: force,
    };
    let copied =
        copy_image(src.as_ref(), dst.as_ref(), &top, Some(claim), &mount_from).map_err(store)?;
    tracing::info!(
        "{}:{tag} ← {}: {} blob(s) uploaded ({}), {} mounted, {} present",
        dst.reference(),
        src.reference(),
        copied.uploaded,
        indicatif::HumanBytes(copied.bytes_uploaded),
        copied.mounted,
        copied.present
    );
    Ok((Outcome::Pushed, top.digest, Some(copied)))
}

/// The result of moving one mutable tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Moved {
    Moved,
    /// The tag already pointed at the image: nothing written.
    Already,
    /// Not moved, and why (a newer release is there, or a pre-release).
    Held(String),
}

/// Points `tag` on `store` at `top`, after checking what it points at now
/// with the same rule the plan used ([`mutable_decision`]).
pub fn move_tag(
    store: &dyn Store,
    top: &Descriptor,
    bytes: &[u8],
    tag: &str,
    release: Option<&Release>,
    prerelease_ok: bool,
) -> Result<Moved, StoreError> {
    let current = crate::state::current(store, tag, Some(&top.digest), release.is_some());
    let (action, why) = mutable_decision(release, prerelease_ok, Some(&top.digest), Some(&current));
    match action {
        TagAction::Keep => Ok(Moved::Already),
        TagAction::Hold => Ok(Moved::Held(why)),
        TagAction::Blocked => Err(StoreError::invalid(store, format!("{tag}: {why}"))),
        TagAction::Move => {
            store.put_manifest(&Reference::tag(tag), top, bytes)?;
            Ok(Moved::Moved)
        }
    }
}

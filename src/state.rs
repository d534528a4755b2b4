//! Reading what the stores hold, once, into the [`State`] value the plan is
//! made from: per image and store, the immutable tag's digest and what each
//! mutable tag points at (with the release of that image, for release images).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use crate::catalog::{Catalog, Format, Image, Target};
use crate::oci::{Digest, Reference, annotation};
use crate::plan::{self, Current, Identity, Plan, Presence, State, StoreState};
use crate::recipe::RunContext;
use crate::registry::Client;
use crate::registry::retry::Policy;
use crate::store::{self, Store, StoreError};

/// Stores read at once while gathering.
const PARALLEL_READS: usize = 8;

pub use crate::plan::Reach;

/// Reads the stores once and plans, over every target of the catalog (what
/// the others hold decides what a narrowed run copies from): the value
/// `plan` prints and `publish` executes. Targets outside `selected` (empty:
/// all) are read once, without retries: one that cannot be read only
/// limits where an image can be copied from.
pub fn plan_catalog(
    catalog: &Catalog,
    identities: &[(&Image, Identity)],
    ctx: &RunContext,
    client: &Arc<Client>,
    reach: Reach,
    selected: &[String],
) -> Plan {
    let build_store = catalog.build_store();
    let base = catalog.base_dir();
    let targets: Vec<&Target> = catalog.targets.iter().collect();
    let quick = Arc::new(client.with_retries(Policy {
        total: Duration::from_secs(10),
        ..client.policy().single_attempt()
    }));
    let client_of = |t: &Target| {
        if selected.is_empty() || selected.contains(&t.name.value) {
            client.clone()
        } else {
            quick.clone()
        }
    };
    let st = gather(identities, &targets, &build_store, &base, &client_of, reach);
    plan::plan(identities, &targets, &build_store, ctx, &st)
}

/// The plan of `imagepipe build`: every image but machine images, onto the
/// build store alone (whatever targets the catalog routes it to), read
/// from the local layout only.
pub fn plan_build_store(
    catalog: &Catalog,
    identities: &[(&Image, Identity)],
    ctx: &RunContext,
    client: &Arc<Client>,
) -> Plan {
    let build_store = catalog.build_store();
    let images: Vec<Image> = identities
        .iter()
        .filter(|(i, _)| i.format != Format::MachineImage)
        .map(|(i, _)| Image {
            targets: None,
            ..(*i).clone()
        })
        .collect();
    let identities: Vec<(&Image, Identity)> = images
        .iter()
        .zip(
            identities
                .iter()
                .filter(|(i, _)| i.format != Format::MachineImage),
        )
        .map(|(image, (_, id))| (image, id.clone()))
        .collect();
    let targets = [&build_store];
    let st = gather(
        &identities,
        &targets,
        &build_store,
        &catalog.base_dir(),
        &|_| client.clone(),
        Reach::Offline,
    );
    plan::plan(&identities, &targets, &build_store, ctx, &st)
}

/// Reads the state of every image on every target it goes to, and on the
/// build store: the immutable tag with a HEAD, each mutable tag with a HEAD
/// (and, for release images whose tag points elsewhere, the manifest, to
/// read which release is there).
pub fn gather(
    images: &[(&Image, Identity)],
    targets: &[&Target],
    build_store: &Target,
    base: &Path,
    client: &(dyn Fn(&Target) -> Arc<Client> + Sync),
    reach: Reach,
) -> State {
    let mut work: Vec<(&Image, &Identity, &Target, bool)> = Vec::new();
    for (image, id) in images {
        let mut seen = Vec::new();
        for t in targets.iter().copied().filter(|t| image.goes_to(t)) {
            seen.push(t.name.value.clone());
            work.push((image, id, t, true));
        }
        // The build store, whatever targets the image goes to: what this
        // runner built is a copy source.
        if !seen.contains(&build_store.name.value)
            && image.format != Format::MachineImage
            && !build_store.kind.is_cloud()
        {
            work.push((image, id, build_store, false));
        }
    }
    let mut states = crate::pool::map(&work, PARALLEL_READS, |(image, id, target, is_target)| {
        read_one(image, id, target, *is_target, base, &client(target), reach)
    });
    // Where a target lacks an image that some store holds, the holders'
    // recipes: the plan copies only an image of this recipe.
    let lacking: std::collections::BTreeSet<&str> = work
        .iter()
        .zip(&states)
        .filter(|((_, _, t, is_target), s)| {
            *is_target && !t.kind.is_cloud() && !matches!(s.immutable, Presence::Present(_))
        })
        .map(|((i, _, _, _), _)| i.name.as_str())
        .collect();
    let sources: Vec<usize> = (0..work.len())
        .filter(|&n| {
            let (image, _, target, _) = work[n];
            !target.kind.is_cloud()
                && matches!(states[n].immutable, Presence::Present(Some(_)))
                && lacking.contains(image.name.as_str())
        })
        .collect();
    let recipes = crate::pool::map(&sources, PARALLEL_READS, |&n| {
        let (image, id, target, _) = work[n];
        recipe_of(image, id, target, base, &client(target))
    });
    for (n, r) in sources.into_iter().zip(recipes) {
        states[n].recipe = r;
    }
    State {
        stores: work
            .iter()
            .zip(states)
            .map(|((image, _, target, _), s)| {
                ((image.name.value.clone(), target.name.value.clone()), s)
            })
            .collect(),
    }
}

/// The recipe annotation of the image under an image's immutable tag on a
/// store; `None` when it could not be read (the copy checks again).
fn recipe_of(
    image: &Image,
    id: &Identity,
    target: &Target,
    base: &Path,
    client: &Arc<Client>,
) -> Option<Option<String>> {
    let store = store::open(target, &image.name, base, client)?;
    let (_, bytes) = store
        .get_manifest(&Reference::tag(id.tag.as_deref()?))
        .ok()??;
    let m = crate::oci::Manifest::parse(&bytes).ok()?;
    Some(m.annotation(annotation::RECIPE).map(str::to_owned))
}

fn read_one(
    image: &Image,
    id: &Identity,
    target: &Target,
    is_target: bool,
    base: &Path,
    client: &Arc<Client>,
    reach: Reach,
) -> StoreState {
    let unknown = |why: &str| StoreState {
        immutable: Presence::Unknown(why.to_owned()),
        mutable: BTreeMap::new(),
        verified: None,
        recipe: None,
        image_id: None,
    };
    let Some(tag) = &id.tag else {
        return unknown("the tag comes from the built content");
    };
    let Some(store) = store::open(target, &image.name, base, client) else {
        // A cloud region: what its existence check says.
        return crate::cloud::state(target, tag, base, reach);
    };
    if reach == Reach::Offline && !store.is_local() {
        return unknown("offline");
    }
    let immutable = match store.resolve(&Reference::tag(tag)) {
        Ok(Some(d)) => Presence::Present(Some(d.digest)),
        Ok(None) => Presence::Absent,
        Err(e) => {
            tracing::warn!("{}: cannot read {tag}: {e}", target.name.value);
            Presence::Unreadable(e.to_string())
        }
    };
    let mut mutable = BTreeMap::new();
    if is_target && !matches!(immutable, Presence::Unknown(_) | Presence::Unreadable(_)) {
        let ours = match &immutable {
            Presence::Present(d) => d.clone(),
            _ => None,
        };
        for m in &id.mutable_tags {
            mutable.insert(
                m.clone(),
                current(store.as_ref(), m, ours.as_ref(), image.kubernetes),
            );
        }
    }
    // Verification is read only where it decides something: images that
    // require it, on stores holding the immutable tag.
    let verified = match &immutable {
        Presence::Present(Some(d)) if id.requires_verification => match store.referrers(d) {
            Ok(r) => crate::verify::verdict(&r),
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read the attestations of {tag}: {e}",
                    target.name.value
                );
                None
            }
        },
        _ => None,
    };
    StoreState {
        immutable,
        mutable,
        verified,
        recipe: None,
        image_id: None,
    }
}

/// What `tag` points at on `store`. The manifest is read (for the release
/// of the image there) only for release images, and only when the tag is
/// not already at `ours`.
pub fn current(store: &dyn Store, tag: &str, ours: Option<&Digest>, release: bool) -> Current {
    match store.resolve(&Reference::tag(tag)) {
        Ok(None) => Current::Absent,
        Ok(Some(d)) if Some(&d.digest) == ours || !release => Current::At {
            digest: d.digest,
            kubernetes: None,
        },
        Ok(Some(d)) => match release_of(store, &d.digest) {
            Ok(kubernetes) => Current::At {
                digest: d.digest,
                kubernetes,
            },
            Err(e) => Current::Unknown(e.to_string()),
        },
        Err(e) => Current::Unknown(e.to_string()),
    }
}

/// The Kubernetes release an image on a store was built for (its
/// `io.imagepipe.kubernetes` annotation).
fn release_of(store: &dyn Store, digest: &Digest) -> Result<Option<String>, StoreError> {
    let Some((_, bytes)) = store.get_manifest(&digest.into())? else {
        return Ok(None);
    };
    let m = crate::oci::Manifest::parse(&bytes)
        .map_err(|e| StoreError::invalid(store, format!("manifest {digest}: {e}")))?;
    Ok(m.annotation(annotation::KUBERNETES).map(str::to_owned))
}

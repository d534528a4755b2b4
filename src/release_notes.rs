//! Release notes: the versions a release pins and, per image and target,
//! the reference with its digest and provenance attestation — gathered as a
//! value (what `--format json` prints), rendered as Markdown.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;

use crate::catalog::{Image, Target};
use crate::oci::Digest;
use crate::plan::Identity;
use crate::recipe::RunContext;
use crate::registry::Client;
use crate::release::Release;

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Notes {
    /// The version of this JSON's shape ([`crate::schema_version::SCHEMA_VERSION`]).
    pub schema_version: u32,
    pub release: String,
    pub kubernetes: String,
    pub kubernetes_deb_version: String,
    /// Pinned components (`runc`, `containerd`) and their versions.
    pub components: Vec<(String, String)>,
    pub images: Vec<ImageNotes>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ImageNotes {
    pub image: String,
    pub distro: String,
    pub version: String,
    /// The immutable tag; `None` when it comes from the built content.
    pub tag: Option<String>,
    pub targets: Vec<Entry>,
}

/// One image on one target.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Entry {
    pub target: String,
    /// `host/ns/name:tag@digest` or `oci:<dir>:tag@digest`.
    pub reference: Option<String>,
    /// A cloud region's machine image id, as Packer reported it.
    pub artifact_id: Option<String>,
    pub digest: Option<Digest>,
    /// Provenance attestations: digest and build time.
    pub provenance: Vec<crate::provenance::Summary>,
    /// What `imagepipe verify` recorded for this digest here: `passed`,
    /// `failed`, or `None` when it was never verified.
    pub verification: Option<&'static str>,
    /// Why there is no reference (not published, failed, unreadable).
    pub problem: Option<String>,
}

impl Notes {
    /// Entries with a problem: the release is incomplete.
    pub fn missing(&self) -> usize {
        self.images
            .iter()
            .flat_map(|i| &i.targets)
            .filter(|e| e.problem.is_some())
            .count()
    }
}

/// Reads every target for the images of a release; machine images come
/// from `results` (what this runner recorded, and the region jobs'
/// metadata files).
pub fn gather(
    release: &Release,
    ctx: &RunContext,
    identities: &[(&Image, Identity)],
    targets: &[&Target],
    base: &Path,
    client: &Arc<Client>,
    results: &std::collections::BTreeMap<String, crate::cloud::Record>,
) -> Notes {
    let images = identities
        .iter()
        .map(|(image, id)| ImageNotes {
            image: image.name.value.clone(),
            distro: image.os.distro.clone(),
            version: image.os.version.clone(),
            tag: id.tag.clone(),
            targets: id.tag.as_ref().map_or_else(Vec::new, |tag| {
                targets
                    .iter()
                    .filter(|t| image.goes_to(t))
                    .map(|t| entry(image, t, tag, base, client, results))
                    .collect()
            }),
        })
        .collect();
    Notes {
        schema_version: crate::schema_version::SCHEMA_VERSION,
        release: release.tag.clone(),
        kubernetes: release.kubernetes(),
        kubernetes_deb_version: release.deb_version(),
        components: ["runc", "containerd"]
            .iter()
            .filter_map(|n| Some(((*n).to_owned(), ctx.variables.get(*n)?.clone())))
            .collect(),
        images,
    }
}

fn entry(
    image: &Image,
    t: &Target,
    tag: &str,
    base: &Path,
    client: &Arc<Client>,
    results: &std::collections::BTreeMap<String, crate::cloud::Record>,
) -> Entry {
    let mut e = Entry {
        target: t.name.value.clone(),
        reference: None,
        artifact_id: None,
        digest: None,
        provenance: Vec::new(),
        verification: None,
        problem: None,
    };
    if t.kind.is_cloud() {
        match results
            .get(&format!("{}/{}", image.name.value, t.name.value))
            .filter(|r| r.name == tag)
        {
            Some(crate::cloud::Record {
                artifact_id: Some(a),
                error: None,
                ..
            }) => e.artifact_id = Some(a.clone()),
            Some(crate::cloud::Record {
                error: Some(err), ..
            }) => {
                e.problem = Some(format!("failed: {err}"));
            }
            _ => {
                e.problem = Some(format!(
                    "missing: no build of `{tag}` recorded in {} (on another runner, pass the region jobs' `publish --metadata-file` outputs with `--metadata-file`)",
                    crate::cloud::results_path(base).display()
                ));
            }
        }
        return e;
    }
    let Some(store) = crate::store::open(t, &image.name, base, client) else {
        e.problem = Some("not an OCI store".into());
        return e;
    };
    match store.resolve(&crate::oci::Reference::tag(tag)) {
        Ok(Some(d)) => {
            e.reference = Some(format!("{}:{tag}@{}", store.reference(), d.digest));
            // One read of the referrers gives both attestations.
            match store.referrers(&d.digest) {
                Ok(referrers) => {
                    e.provenance = crate::provenance::summaries(&referrers);
                    e.verification = crate::verify::verdict(&referrers)
                        .map(|passed| if passed { "passed" } else { "failed" });
                }
                Err(err) => tracing::warn!("{}: attestations unreadable: {err}", t.name.value),
            }
            e.digest = Some(d.digest);
        }
        Ok(None) => {
            e.problem = Some(format!(
                "missing: `{}:{tag}` is not published",
                store.reference()
            ));
        }
        Err(err) => e.problem = Some(format!("unknown: {err}")),
    }
    e
}

/// The notes as Markdown.
pub fn markdown(n: &Notes) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Kubernetes {} node images\n", n.kubernetes);
    let _ = writeln!(md, "Release tag: `{}`\n", n.release);
    let _ = writeln!(md, "| component | version |\n|---|---|");
    let _ = writeln!(
        md,
        "| Kubernetes | {} (packages {}) |",
        n.kubernetes, n.kubernetes_deb_version
    );
    for (name, v) in &n.components {
        let _ = writeln!(md, "| {name} | {v} |");
    }
    for i in &n.images {
        let _ = writeln!(md, "\n## {} ({} {})\n", i.image, i.distro, i.version);
        if i.tag.is_none() {
            let _ = writeln!(
                md,
                "Tag derived from built content: see the publish report."
            );
            continue;
        }
        let _ = writeln!(md, "| target | image |\n|---|---|");
        for e in &i.targets {
            let cell = match (&e.reference, &e.problem) {
                _ if e.artifact_id.is_some() => {
                    format!(
                        "`{}`: `{}`",
                        i.tag.as_deref().unwrap_or_default(),
                        e.artifact_id.as_deref().unwrap_or_default()
                    )
                }
                (Some(r), _) => {
                    let attested: String = if e.digest.is_some() && e.provenance.is_empty() {
                        " (no provenance attestation)".into()
                    } else {
                        e.provenance
                            .iter()
                            .map(|a| {
                                format!(
                                    " (provenance `{}`, built {})",
                                    a.digest,
                                    a.built_at.as_deref().unwrap_or("at an unknown time")
                                )
                            })
                            .collect()
                    };
                    let verified = match e.verification {
                        Some("passed") => " — boot verified",
                        Some(_) => " — **boot verification failed**",
                        None => "",
                    };
                    format!("`{r}`{attested}{verified}")
                }
                (None, Some(p)) => p.clone(),
                (None, None) => String::new(),
            };
            let _ = writeln!(md, "| {} | {cell} |", e.target);
        }
    }
    md
}

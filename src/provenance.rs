//! Build facts, kept out of the image: an in-toto statement with a SLSA
//! provenance v1 predicate, stored as an OCI artifact whose `subject` is the
//! image. It travels with the image (a referrer) to every store, and its
//! `org.opencontainers.image.created` is the age retention uses.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::oci::{Descriptor, Digest, annotation, canonical_json, media, rfc3339};
use crate::recipe::RunContext;
use crate::store::{Store, StoreError, bytes_opener};

/// `artifactType` of the attestation manifest and media type of its statement.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE: &str = "https://slsa.dev/provenance/v1";
/// The SLSA `buildType` of imagepipe builds (documented in docs/identity.md).
pub const BUILD_TYPE: &str = "https://imagepipe.dev/provenance/build/v1";
/// Layer annotation naming the statement's predicate type (as cosign and BuildKit do).
pub const PREDICATE_TYPE_ANNOTATION: &str = "in-toto.io/predicate-type";

/// What the statement records about one build.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub image: &'a str,
    pub recipe_hash: &'a str,
    /// The canonical recipe (JSON text).
    pub recipe: &'a str,
    /// Downloaded sources: URL and sha256.
    pub downloads: Vec<(String, String)>,
    /// Seconds since 1970: when the build ran (or `SOURCE_DATE_EPOCH`).
    pub built_at: i64,
    pub started_at: i64,
}

/// The attestation's build time: `SOURCE_DATE_EPOCH` when set, else the clock.
pub fn build_time(ctx: &RunContext) -> i64 {
    ctx.source_date_epoch.unwrap_or_else(now)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The in-toto statement for an image.
pub fn statement(subject: &Descriptor, facts: &Facts<'_>, ctx: &RunContext) -> Value {
    let mut dependencies: Vec<Value> = facts
        .downloads
        .iter()
        .map(|(url, sha)| json!({ "uri": url, "digest": { "sha256": sha } }))
        .collect();
    if let Some(commit) = &ctx.commit {
        let mut dep = json!({ "digest": { "gitCommit": commit } });
        if let Some(repo) = &ctx.repository {
            dep["uri"] = json!(format!("git+{repo}"));
        }
        dependencies.push(dep);
    }
    let recipe: Value = serde_json::from_str(facts.recipe).unwrap_or(Value::Null);
    let mut metadata = json!({
        "startedOn": rfc3339(facts.started_at),
        "finishedOn": rfc3339(facts.built_at),
    });
    if let Some(id) = ctx.pipeline_url.as_ref().or(ctx.pipeline.as_ref()) {
        metadata["invocationId"] = json!(id);
    }
    json!({
        "_type": STATEMENT_TYPE,
        "subject": [{ "name": facts.image, "digest": { "sha256": subject.digest.hex() } }],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "image": facts.image,
                    "release": ctx.release.as_ref().map(|r| r.tag.clone()),
                    "variables": ctx.variables,
                },
                "internalParameters": { "recipeHash": facts.recipe_hash, "recipe": recipe },
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {
                    "id": "https://imagepipe.dev/builder",
                    "version": { "imagepipe": env!("CARGO_PKG_VERSION") },
                },
                "metadata": metadata,
            },
        },
    })
}

/// Writes the provenance attestation of `subject` into `store` and lists it
/// as a referrer of `subject`; returns its descriptor.
pub fn attach(
    store: &dyn Store,
    subject: &Descriptor,
    statement: &Value,
    built_at: i64,
) -> Result<Descriptor, StoreError> {
    attach_statement(store, subject, statement, SLSA_PROVENANCE, built_at, &[])
}

/// Writes an in-toto statement with predicate type `predicate_type` as an
/// OCI artifact referring to `subject`. `annotations` are added to the
/// manifest and to its entry in the referrers list, so that a reader can
/// tell what it says without fetching it.
pub fn attach_statement(
    store: &dyn Store,
    subject: &Descriptor,
    statement: &Value,
    predicate_type: &str,
    created_at: i64,
    extra: &[(&str, String)],
) -> Result<Descriptor, StoreError> {
    let body = canonical_json(statement);
    let body_desc = Descriptor::new(IN_TOTO, Digest::of(&body), body.len() as u64);
    let empty = b"{}";
    let empty_desc = Descriptor::new(media::EMPTY, Digest::of(empty), 2);
    store.put_blob(&body_desc, &bytes_opener(&body))?;
    store.put_blob(&empty_desc, &bytes_opener(empty))?;
    let created = rfc3339(created_at);
    let mut layer = body_desc.clone();
    layer
        .annotations
        .insert(PREDICATE_TYPE_ANNOTATION.into(), predicate_type.into());
    let mut annotations: BTreeMap<String, String> = [
        (annotation::CREATED.to_owned(), created),
        (
            PREDICATE_TYPE_ANNOTATION.to_owned(),
            predicate_type.to_owned(),
        ),
    ]
    .into();
    for (k, v) in extra {
        annotations.insert((*k).to_owned(), v.clone());
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media::MANIFEST,
        "artifactType": IN_TOTO,
        "config": empty_desc,
        "layers": [layer],
        "subject": { "mediaType": subject.media_type, "digest": subject.digest, "size": subject.size },
        "annotations": annotations,
    });
    let bytes = canonical_json(&manifest);
    let mut desc = Descriptor::new(media::MANIFEST, Digest::of(&bytes), bytes.len() as u64);
    desc.artifact_type = Some(IN_TOTO.to_owned());
    // The referrers list carries the manifest's annotations, so the build
    // time is known from the list alone.
    desc.annotations = annotations;
    store.put_referrer(&subject.digest, &desc, &bytes)?;
    Ok(desc)
}

/// The provenance attestations among a subject's referrers (in-toto
/// statements with the SLSA provenance predicate, or with none named).
pub fn attestations(referrers: &[Descriptor]) -> impl Iterator<Item = &Descriptor> {
    referrers.iter().filter(|d| {
        d.artifact_type.as_deref() == Some(IN_TOTO)
            && d.annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .is_none_or(|p| p == SLSA_PROVENANCE)
    })
}

/// The earliest build time a subject's attestations record.
pub fn built_at(referrers: &[Descriptor]) -> Option<i64> {
    attestations(referrers)
        .filter_map(|d| d.annotations.get(annotation::CREATED))
        .filter_map(|c| crate::oci::parse_rfc3339(c))
        .min()
}

/// What `release-notes` shows of a provenance attestation.
#[derive(Clone, Debug, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    pub digest: Digest,
    pub built_at: Option<String>,
}

/// The provenance attestations among an image's referrers, summarised.
pub fn summaries(referrers: &[Descriptor]) -> Vec<Summary> {
    attestations(referrers)
        .map(|d| Summary {
            digest: d.digest.clone(),
            built_at: d.annotations.get(annotation::CREATED).cloned(),
        })
        .collect()
}

//! `imagepipe publish` and `imagepipe release-notes`.

use std::fmt::Write as _;

use super::{Format, PublishArgs, ReleaseNotesArgs, output, settings};
use crate::build;
use crate::catalog;
use crate::env::Environment;
use crate::error::{EXIT_FAILED, Error, Result};
use crate::publish::{self, Item, Outcome};
use crate::state::Reach;

pub fn run(args: &PublishArgs, env: &Environment) -> Result<u8> {
    let c = &args.common;
    let (catalog, ctx) = settings::load(&c.config, args.release.as_deref(), env)?;
    let targets = settings::select_targets(&catalog, &c.target)?;
    let identities = settings::identities(&catalog, &c.only, &ctx)?;
    let base = catalog.base_dir();
    let store_dir = catalog.build_store_dir();
    let build_store = catalog.build_store();
    let client = settings::registry_client(env, None);
    let mut plan = super::plan::make(
        &catalog,
        &identities,
        &targets,
        &ctx,
        &client,
        Reach::Online,
    );
    if args.force {
        plan = crate::plan::forced(plan);
    }
    if args.dry_run {
        super::plan::print(&plan, args.format.into(), &catalog, &c.config, env)?;
        return Ok(0);
    }
    let mut items: Vec<Item> = Vec::new();
    for (image, id) in &identities {
        if image.format == catalog::Format::MachineImage && !args.tags_only {
            let regions: Vec<&catalog::Target> = targets
                .iter()
                .copied()
                .filter(|t| image.goes_to(t))
                .collect();
            items.extend(
                crate::cloud::publish(&catalog, image, id, &ctx, &regions, args.jobs)
                    .into_iter()
                    .map(cloud_item),
            );
        }
    }
    // Mutable tags move only when this run covers every target; a run
    // narrowed by --target (a fan-out job) leaves them to `--tags-only`,
    // which moves them on the targets it names once each holds the immutable tag.
    let covers_all = catalog
        .targets
        .iter()
        .all(|t| targets.iter().any(|s| s.name.value == t.name.value));
    if !covers_all && !args.tags_only {
        tracing::info!(
            "--target covers part of the targets: mutable tags are left for `publish --tags-only`"
        );
    }
    let opts = publish::Options {
        force: args.force,
        tags_only: args.tags_only,
        move_mutable: covers_all || args.tags_only,
    };
    let builder = |image: &catalog::Image, id: &crate::plan::Identity| {
        build::build_image(
            &catalog,
            image,
            id,
            &ctx,
            &store_dir,
            build::Options { force: args.force },
        )
        .map(|b| b.tag)
    };
    let stores = publish::Stores {
        targets: &targets,
        build_store: &build_store,
        base: &base,
        client: &client,
    };
    items.extend(publish::execute(
        &plan,
        &identities,
        ctx.release.as_ref(),
        &stores,
        &builder,
        opts,
    ));
    report(&items, args.format)?;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            let result = match i.outcome {
                Outcome::Pushed => "pushed".to_owned(),
                Outcome::Present => "present".to_owned(),
                Outcome::Failed => format!("FAILED: {}", i.error.as_deref().unwrap_or("")),
            };
            let reference = i
                .digest
                .as_ref()
                .map_or_else(|| i.reference.clone(), |d| format!("{}@{d}", i.reference));
            vec![
                i.image.clone(),
                i.target.clone(),
                format!("`{reference}`"),
                result,
                i.moved.join(", "),
            ]
        })
        .collect();
    crate::ci::step_summary(
        env,
        &format!(
            "### imagepipe publish\n\n{}",
            crate::ci::markdown_table(&["image", "target", "reference", "result", "moved"], &rows)
        ),
    )
    .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    Ok(if items.iter().any(|i| i.outcome == Outcome::Failed) {
        EXIT_FAILED
    } else {
        0
    })
}

/// A region's machine image as a publish item: the reference is Packer's artifact id.
fn cloud_item(r: crate::cloud::Record) -> Item {
    let outcome = if r.error.is_some() {
        Outcome::Failed
    } else {
        Outcome::Pushed
    };
    Item {
        image: r.image,
        target: r.target,
        reference: r
            .artifact_id
            .unwrap_or_else(|| format!("{}:{}", r.provider, r.region)),
        tag: r.name,
        digest: None,
        action: crate::plan::Action::Build,
        outcome,
        from: None,
        copied: None,
        moved: Vec::new(),
        held: Vec::new(),
        error: r.error,
    }
}

fn report(items: &[Item], format: Format) -> Result<()> {
    for i in items.iter().filter(|i| i.outcome == Outcome::Failed) {
        tracing::error!(
            "{} → {}: {}",
            i.image,
            i.target,
            i.error.as_deref().unwrap_or("failed")
        );
    }
    if format == Format::Json {
        output::json(&serde_json::json!({ "items": items }))?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            vec![
                i.image.clone(),
                i.target.clone(),
                match &i.digest {
                    Some(d) => format!("{}@{d}", i.reference),
                    None => i.reference.clone(),
                },
                match i.outcome {
                    Outcome::Pushed => "pushed",
                    Outcome::Present => "present",
                    Outcome::Failed => "FAILED",
                }
                .to_owned(),
                i.moved.join(","),
            ]
        })
        .collect();
    output::table(&["IMAGE", "TARGET", "REFERENCE", "RESULT", "MOVED"], &rows);
    Ok(())
}

pub fn release_notes(args: &ReleaseNotesArgs, env: &Environment) -> Result<u8> {
    let release = settings::release(Some(&args.release), env)?
        .ok_or_else(|| Error::Usage("--release is required".into()))?;
    let catalog = catalog::load(&args.config)?;
    let ctx = settings::run_context(&catalog, Some(release.clone()), env)?;
    let targets = settings::select_targets(&catalog, &args.target)?;
    let identities = settings::identities(&catalog, &args.only, &ctx)?;
    let base = catalog.base_dir();
    let client = settings::registry_client(env, None);
    let mut md = String::new();
    let _ = writeln!(md, "# Kubernetes {} node images\n", release.kubernetes());
    let _ = writeln!(md, "Release tag: `{}`\n", release.tag);
    let _ = writeln!(md, "| component | version |\n|---|---|");
    let _ = writeln!(
        md,
        "| Kubernetes | {} (packages {}) |",
        release.kubernetes(),
        release.deb_version()
    );
    for name in ["runc", "containerd"] {
        if let Some(v) = ctx.variables.get(name) {
            let _ = writeln!(md, "| {name} | {v} |");
        }
    }
    let mut missing = 0;
    for (image, id) in &identities {
        let _ = writeln!(
            md,
            "\n## {} ({} {})\n",
            image.name.value, image.os.distro, image.os.version
        );
        let Some(tag) = &id.tag else {
            let _ = writeln!(
                md,
                "Tag derived from built content: see the publish report."
            );
            continue;
        };
        let _ = writeln!(md, "| target | image |\n|---|---|");
        let results = crate::cloud::read_results(&base);
        for t in targets.iter().filter(|t| image.goes_to(t)) {
            if t.kind.is_cloud() {
                let cell = match results
                    .get(&format!("{}/{}", image.name.value, t.name.value))
                    .filter(|r| r.name == *tag)
                {
                    Some(crate::cloud::Record {
                        artifact_id: Some(a),
                        error: None,
                        ..
                    }) => format!("`{tag}`: `{a}`"),
                    Some(crate::cloud::Record { error: Some(e), .. }) => {
                        missing += 1;
                        format!("failed: {e}")
                    }
                    _ => {
                        missing += 1;
                        format!(
                            "missing: no build of `{tag}` recorded in {}",
                            crate::cloud::results_path(&base).display()
                        )
                    }
                };
                let _ = writeln!(md, "| {} | {cell} |", t.name.value);
                continue;
            }
            let Some(dest) = crate::store::open(t, &image.name, &base, &client) else {
                continue;
            };
            let cell = match dest.resolve(tag) {
                Ok(Some(d)) => {
                    let attested = match crate::provenance::summaries(dest.as_ref(), &d.digest) {
                        Ok(list) if list.is_empty() => " (no provenance attestation)".to_owned(),
                        Ok(list) => list
                            .iter()
                            .map(|a| {
                                format!(
                                    " (provenance `{}`, built {})",
                                    a.digest,
                                    a.built_at.as_deref().unwrap_or("at an unknown time")
                                )
                            })
                            .collect(),
                        Err(e) => format!(" (provenance unreadable: {e})"),
                    };
                    format!("`{}:{tag}@{}`{attested}", dest.reference(), d.digest)
                }
                Ok(None) => {
                    missing += 1;
                    format!("missing: `{}:{tag}` is not published", dest.reference())
                }
                Err(e) => {
                    missing += 1;
                    format!("unknown: {e}")
                }
            };
            let _ = writeln!(md, "| {} | {cell} |", t.name.value);
        }
    }
    output::text(&md);
    if missing > 0 {
        tracing::error!("{missing} image reference(s) are missing");
        return Ok(EXIT_FAILED);
    }
    Ok(0)
}

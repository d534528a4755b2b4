//! `imagepipe publish` and `imagepipe release-notes`.

use super::{Format, PublishArgs, ReleaseNotesArgs, output};
use crate::builder;
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::publish::{self, Item, Outcome};
use crate::settings;
use crate::state::Reach;

pub fn run(args: &PublishArgs, env: &Environment) -> Result<ExitStatus> {
    let c = &args.common;
    let s = settings::Settings::resolve(c, &args.release, env, Some(&args.registry), None)?;
    let (catalog, ctx, client) = (&s.catalog, &s.ctx, &s.client);
    let threads = env.threads().map_err(Error::Usage)?;
    let targets = s.targets();
    let identities = s.identities()?;
    let base = catalog.base_dir();
    let store_dir = catalog.build_store_dir();
    let build_store = catalog.build_store();
    let mut plan = crate::state::plan_catalog(
        catalog,
        &identities,
        ctx,
        client,
        Reach::Online,
        &s.target_names,
    );
    if args.force {
        plan = crate::plan::forced(plan);
    }
    if args.immutable_only {
        plan = crate::plan::immutable_only(plan);
    }
    let selected: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    if let Some(file) = &args.metadata_file {
        metadata_dir(file)?;
    }
    if args.dry_run {
        let mut shown = plan.clone();
        shown
            .items
            .retain(|i| selected.contains(&i.target.as_str()));
        super::plan::print(&shown, args.format.into(), catalog, &c.config, env, "")?;
        return Ok(ExitStatus::Success);
    }
    // Mutable tags move on the selected targets once each of them holds
    // the immutable tag (`--immutable-only` planned them held).
    let opts = publish::Options {
        force: args.force,
        tags_only: args.tags_only,
    };
    let builder = |image: &catalog::Image,
                   id: &crate::plan::Identity,
                   streams: &[std::sync::Arc<dyn crate::store::StreamTarget>]| {
        builder::build_image(
            catalog,
            image,
            id,
            ctx,
            &store_dir,
            builder::Options {
                force: args.force,
                streams: streams.to_vec(),
                threads,
            },
        )
        .map(|b| b.tag)
    };
    // Every target: a narrowed run copies from, and mounts from, the others.
    let all_targets: Vec<&catalog::Target> = catalog.targets.iter().collect();
    let stores = publish::Stores {
        targets: &all_targets,
        build_store: &build_store,
        base: &base,
        client,
    };
    let regions = |image: &catalog::Image,
                   id: &crate::plan::Identity,
                   planned: &[(&catalog::Target, &crate::plan::PlanItem)]| {
        crate::cloud::publish(catalog, image, id, ctx, planned, args.jobs)
    };
    let items = publish::execute(
        &plan,
        &selected,
        &identities,
        ctx.release.as_ref(),
        &stores,
        &builder,
        &regions,
        opts,
    );
    report(&items, args.format)?;
    if let Some(file) = &args.metadata_file {
        write_metadata(file, &items)?;
    }
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
    Ok(ExitStatus::failed_if(
        items.iter().any(|i| i.outcome == Outcome::Failed),
    ))
}

/// The directory `--metadata-file` is written in; checked before any work.
fn metadata_dir(file: &std::path::Path) -> Result<std::path::PathBuf> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--metadata-file {}: directory {} does not exist — create it or choose another path",
            file.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// Writes the publish results as `--format json` prints them, atomically:
/// a reader sees the previous file or the whole new one, never a part.
fn write_metadata(file: &std::path::Path, items: &[Item]) -> Result<()> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Failed(format!("--metadata-file {}: {e}", file.display()))
    };
    let text =
        serde_json::to_vec_pretty(&serde_json::json!({ "items": items })).map_err(|e| fail(&e))?;
    metadata_dir(file)?;
    crate::files::write_atomic(file, &text).map_err(|e| fail(&e))
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

pub fn release_notes(args: &ReleaseNotesArgs, env: &Environment) -> Result<ExitStatus> {
    let s =
        settings::Settings::resolve(&args.common, &args.release, env, Some(&args.registry), None)?;
    let release = s.ctx.release.clone().ok_or_else(|| {
        Error::Usage(
            "no release: pass `--release vX.Y.Z`, or run in a tag pipeline (CI_COMMIT_TAG, or GITHUB_REF_NAME with GITHUB_REF_TYPE=tag)".into(),
        )
    })?;
    let (catalog, ctx, client) = (&s.catalog, &s.ctx, &s.client);
    let targets = s.targets();
    let identities = s.identities()?;
    let mut results = crate::cloud::read_results(&catalog.base_dir());
    for file in &args.metadata_files {
        results.extend(crate::cloud::read_metadata(file, &catalog.targets).map_err(Error::Usage)?);
    }
    let notes = crate::release_notes::gather(
        &release,
        ctx,
        &identities,
        &targets,
        &catalog.base_dir(),
        client,
        &results,
    );
    match args.format {
        Format::Json => {
            output::json(&notes)?;
        }
        Format::Table => output::text(&crate::release_notes::markdown(&notes)),
    }
    let missing = notes.missing();
    if missing > 0 {
        tracing::error!("{missing} image reference(s) are missing");
        return Ok(ExitStatus::Failed);
    }
    Ok(ExitStatus::Success)
}

//! `imagepipe publish`.

use super::{Format, PublishArgs, output};
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
        crate::report::metadata_dir(file)?;
    }
    // Every target: a narrowed run copies from, and mounts from, the others.
    let all_targets: Vec<&catalog::Target> = catalog.targets.iter().collect();
    if args.dry_run {
        let mut shown = plan.clone();
        shown
            .items
            .retain(|i| selected.contains(&i.target.as_str()));
        super::plan::print(&shown, args.format.into(), catalog, &c.config, env, "")?;
        return Ok(super::plan::unreadable(
            &plan,
            &selected,
            args.allow_unknown,
        ));
    }
    // Every selected target is read and takes pushes, before anything is built.
    let problems = publish::preflight(&s, &plan, &selected, &all_targets, args.tags_only);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!("{p}");
        }
        return Err(Error::Failed(format!(
            "{} selected target(s) cannot be published to: nothing was built or pushed",
            problems.len()
        )));
    }
    let items = publish::run(
        &s,
        &identities,
        &plan,
        &selected,
        &all_targets,
        publish::Run {
            force: args.force,
            tags_only: args.tags_only,
            threads,
            jobs: args.jobs,
        },
    );
    report(&items, args.format)?;
    if let Some(file) = &args.metadata_file {
        crate::report::write_metadata(file, &items)?;
    }
    let rows: Vec<Vec<String>> = items.iter().map(|i| row(i, true)).collect();
    crate::ci::step_summary(
        env,
        &format!(
            "### imagepipe publish\n\n{}",
            crate::ci::markdown_table(
                &["image", "target", "reference", "result", "moved", "held"],
                &rows
            )
        ),
    )
    .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    Ok(ExitStatus::failed_if(
        items.iter().any(|i| i.outcome == Outcome::Failed),
    ))
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
        output::json(&crate::report::Publish {
            schema_version: crate::report::SCHEMA_VERSION,
            items,
        })?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = items.iter().map(|i| row(i, false)).collect();
    output::table(
        &["IMAGE", "TARGET", "REFERENCE", "RESULT", "MOVED", "HELD"],
        &rows,
    );
    Ok(())
}

/// One item as a table row (the terminal's, or the job summary's in
/// Markdown, where a failure says why): the mutable tags it moved and held.
fn row(i: &Item, markdown: bool) -> Vec<String> {
    let reference = i
        .digest
        .as_ref()
        .map_or_else(|| i.reference.clone(), |d| format!("{}@{d}", i.reference));
    let result = match i.outcome {
        Outcome::Pushed => "pushed".to_owned(),
        Outcome::Present => "present".to_owned(),
        Outcome::Failed if markdown => format!("FAILED: {}", i.error.as_deref().unwrap_or("")),
        Outcome::Failed => "FAILED".to_owned(),
    };
    let held: Vec<&str> = i
        .held
        .iter()
        .map(|h| h.split_once(':').map_or(h.as_str(), |(t, _)| t))
        .collect();
    vec![
        i.image.clone(),
        i.target.clone(),
        if markdown {
            format!("`{reference}`")
        } else {
            reference
        },
        result,
        i.moved.join(", "),
        held.join(", "),
    ]
}

//! `imagepipe build`.

use super::{BuildArgs, Format, output};
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::publish::{self, Outcome};
use crate::settings;

pub fn run(args: &BuildArgs, env: &Environment) -> Result<ExitStatus> {
    let s = settings::Settings::resolve(&args.common, &args.release, env, None, None)?;
    let (catalog, ctx) = (&s.catalog, &s.ctx);
    let threads = env.threads().map_err(Error::Usage)?;
    let identities = s.identities()?;
    for (image, _) in identities
        .iter()
        .filter(|(i, _)| i.format == catalog::Format::MachineImage)
    {
        tracing::info!(
            "{}: a machine image is built in each cloud region by `imagepipe publish`",
            image.name.value
        );
    }
    let build_store = catalog.build_store();
    let mut plan = crate::state::plan_build_store(catalog, &identities, ctx, &s.client);
    if args.force {
        plan = crate::plan::forced(plan);
    }
    let items = publish::run(
        &s,
        &identities,
        &plan,
        &[build_store.name.as_str()],
        &[&build_store],
        publish::Run {
            force: args.force,
            threads,
            ..publish::Run::default()
        },
    );
    let mut built = Vec::new();
    let mut failures = Vec::new();
    for i in &items {
        let Some(digest) = i.digest.as_ref().filter(|_| i.outcome != Outcome::Failed) else {
            let error = i.error.as_deref().unwrap_or("failed");
            tracing::error!("{}: {error}", i.image);
            failures.push(serde_json::json!({ "image": i.image, "error": error }));
            continue;
        };
        if i.outcome == Outcome::Present {
            tracing::info!("{}: {} is already in the store", i.image, i.tag);
        }
        for h in &i.held {
            tracing::info!("{}: not moved: {h}", i.image);
        }
        if args.format == Format::Table {
            output::line(&format!("{} {} {digest}", i.image, i.tag));
        }
        let mutable_tags = plan
            .items
            .iter()
            .find(|p| p.image == i.image)
            .map(|p| p.mutable_tags.clone())
            .unwrap_or_default();
        built.push(serde_json::json!({
            "image": i.image,
            "tag": i.tag,
            "mutable_tags": mutable_tags,
            "digest": digest,
            "cached": i.outcome == Outcome::Present,
        }));
    }
    if args.format == Format::Json {
        output::json(
            &serde_json::json!({ "schema_version": crate::report::SCHEMA_VERSION, "store": catalog.build_store_dir(), "items": built, "failures": failures }),
        )?;
    }
    if failures.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        tracing::error!("{} of {} image(s) failed", failures.len(), items.len());
        Ok(ExitStatus::Failed)
    }
}

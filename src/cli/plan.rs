//! `imagepipe plan`.

use std::time::Duration;

use super::{PlanArgs, PlanFormat, output, settings};
use crate::catalog::{self, Catalog, Image, Target};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::plan::{self, Identity, Plan};
use crate::recipe::RunContext;
use crate::registry::retry::Policy;
use crate::state::{self, Reach};

/// Reads the stores once and plans, over every target of the catalog (what
/// the others hold decides what a narrowed run copies from): the value
/// `plan` prints and `publish` executes. Targets outside `selected` (empty:
/// all) are read once, without retries: one that cannot be read only
/// limits where an image can be copied from.
pub fn make(
    catalog: &Catalog,
    identities: &[(&Image, Identity)],
    ctx: &RunContext,
    client: &std::sync::Arc<crate::registry::Client>,
    reach: Reach,
    selected: &[String],
) -> Plan {
    let build_store = catalog.build_store();
    let base = catalog.base_dir();
    let targets: Vec<&Target> = catalog.targets.iter().collect();
    let quick = std::sync::Arc::new(client.with_retries(Policy {
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
    let st = state::gather(identities, &targets, &build_store, &base, &client_of, reach);
    plan::plan(identities, &targets, &build_store, ctx, &st)
}

pub fn run(args: &PlanArgs, env: &Environment) -> Result<ExitStatus> {
    let c = &args.common;
    let s = settings::Settings::resolve(
        c,
        &args.release,
        env,
        Some(&args.registry),
        Some(Policy {
            attempts: 2,
            total: Duration::from_secs(10),
            ..Policy::default()
        }),
    )?;
    let (catalog, ctx, client) = (&s.catalog, &s.ctx, &s.client);
    let targets = s.targets();
    let identities = s.identities()?;
    let reach = if args.offline {
        Reach::Offline
    } else {
        Reach::Online
    };
    let mut p = make(catalog, &identities, ctx, client, reach, &s.target_names);
    p.items
        .retain(|i| targets.iter().any(|t| t.name.value == i.target));
    crate::ci::write_github_output(env, &p)
        .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_OUTPUT)))?;
    let narrowed: String = c
        .only
        .iter()
        .map(|o| format!(" --only {}", crate::ci::shell_quote(o)))
        .chain(
            c.target
                .iter()
                .map(|t| format!(" --target {}", crate::ci::shell_quote(t))),
        )
        .collect();
    print(&p, args.format, catalog, &c.config, env, &narrowed)?;
    Ok(ExitStatus::Success)
}

/// Prints a plan in any of its formats (and adds it to the CI job summary).
pub fn print(
    p: &Plan,
    format: PlanFormat,
    catalog: &Catalog,
    config: &std::path::Path,
    env: &Environment,
    narrowed: &str,
) -> Result<()> {
    crate::ci::step_summary(
        env,
        &format!(
            "### imagepipe plan\n\n{}",
            crate::ci::markdown_table(&output::PLAN_HEADER, &output::plan_rows(p))
        ),
    )
    .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    match format {
        PlanFormat::Table => output::plan_table(p),
        PlanFormat::Json => {
            output::json(p)?;
        }
        PlanFormat::GithubMatrix => {
            output::json(&crate::ci::github_matrix(p))?;
        }
        PlanFormat::Gitlab => {
            let store = match &catalog.build_store().kind {
                catalog::TargetKind::Layout { path } => config
                    .parent()
                    .unwrap_or(std::path::Path::new(""))
                    .join(path),
                catalog::TargetKind::Registry { .. } | catalog::TargetKind::Cloud { .. } => {
                    std::path::PathBuf::from(catalog::DEFAULT_LAYOUT)
                }
            };
            output::text(&crate::ci::gitlab_pipeline(
                p,
                config,
                &store,
                env.get(crate::env::IMAGEPIPE_CI_IMAGE),
                narrowed,
            ));
        }
    }
    Ok(())
}

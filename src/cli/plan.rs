//! `imagepipe plan`.

use std::time::Duration;

use super::{PlanArgs, PlanFormat, output};
use crate::catalog::{self, Catalog};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::plan::{Action, Plan};
use crate::registry::retry::Policy;
use crate::settings;
use crate::state::{self, Reach};

pub fn run(args: &PlanArgs, env: &Environment) -> Result<ExitStatus> {
    let c = &args.common;
    let mut s = settings::Settings::resolve(
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
    s.offline = args.offline;
    let (catalog, ctx, client) = (&s.catalog, &s.ctx, &s.client);
    let targets = s.targets();
    let identities = s.identities()?;
    let reach = if args.offline {
        Reach::Offline
    } else {
        Reach::Online
    };
    let mut p = state::plan_catalog(catalog, &identities, ctx, client, reach, &s.target_names);
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
    for i in p.items.iter().filter(|i| i.action == Action::Conflict) {
        tracing::warn!("{} → {}: {}", i.image, i.target, i.reason);
    }
    Ok(unreadable(&p, &[], args.allow_unknown))
}

/// A selected target whose state cannot be read fails the plan (what it
/// says of that target is a guess), unless `allowed`: then it warns.
pub fn unreadable(p: &Plan, selected: &[&str], allowed: bool) -> ExitStatus {
    let lines = p.unreadable(selected);
    for l in &lines {
        if allowed {
            tracing::warn!("{l}");
        } else {
            tracing::error!("{l}");
        }
    }
    if !lines.is_empty() && !allowed {
        tracing::error!(
            "{} target state(s) could not be read: fix what the messages say, or pass --allow-unknown to plan anyway",
            lines.len()
        );
    }
    ExitStatus::failed_if(!lines.is_empty() && !allowed)
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

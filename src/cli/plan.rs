//! `imagepipe plan`.

use super::{Format, PlanArgs, output, settings};
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::plan;
use crate::publish::LiveState;
use crate::registry::retry::Policy;
use crate::store::OfflineState;
use std::time::Duration;

pub fn run(args: &PlanArgs, env: &Environment) -> Result<u8> {
    let c = &args.common;
    let (catalog, ctx) = settings::load(&c.config, args.release.as_deref(), env)?;
    let targets = settings::select_targets(&catalog, &c.target)?;
    let identities = settings::identities(&catalog, &c.only, &ctx)?;
    let base = catalog.base_dir();
    let client = settings::registry_client(
        env,
        Some(Policy {
            attempts: 2,
            total: Duration::from_secs(10),
            ..Policy::default()
        }),
    );
    let live = LiveState {
        client: &client,
        base: &base,
    };
    let offline = OfflineState { base: &base };
    let state: &dyn plan::TargetState = if args.offline { &offline } else { &live };
    let p = plan::plan(&identities, &targets, &catalog.build_store(), &ctx, state);
    crate::ci::write_github_output(env, &p)
        .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_OUTPUT)))?;
    crate::ci::step_summary(
        env,
        &format!(
            "### imagepipe plan\n\n{}",
            crate::ci::markdown_table(&output::PLAN_HEADER, &output::plan_rows(&p))
        ),
    )
    .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    match c.format {
        Format::Table => output::plan_table(&p),
        Format::Json => {
            output::json(&p)?;
        }
        Format::GithubMatrix => {
            output::json(&crate::ci::github_matrix(&p))?;
        }
        Format::Gitlab => {
            let store = match &catalog.build_store().kind {
                catalog::TargetKind::Layout { path } => c
                    .config
                    .parent()
                    .unwrap_or(std::path::Path::new(""))
                    .join(path),
                catalog::TargetKind::Registry { .. } | catalog::TargetKind::Cloud { .. } => {
                    std::path::PathBuf::from(catalog::DEFAULT_LAYOUT)
                }
            };
            output::text(&crate::ci::gitlab_pipeline(
                &p,
                &c.config,
                &store,
                env.get(crate::env::IMAGEPIPE_CI_IMAGE),
            ));
        }
    }
    Ok(0)
}

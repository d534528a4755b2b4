//! `imagepipe plan`.

use super::{Format, PlanArgs, output, settings};
use crate::catalog;
use crate::env::Environment;
use crate::error::Result;
use crate::plan;
use crate::publish::LiveState;
use crate::registry::retry::Policy;
use crate::store::OfflineState;
use std::time::Duration;

pub fn run(args: &PlanArgs, env: &Environment) -> Result<u8> {
    let c = &args.common;
    let catalog = catalog::load(&c.config)?;
    let ctx = settings::run_context(
        &catalog,
        settings::release(args.release.as_deref(), env)?,
        env,
    )?;
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
    match c.format {
        Format::Table => output::plan_table(&p),
        Format::Json => {
            output::json(&p)?;
        }
        Format::GithubMatrix => {
            output::json(&output::github_matrix(&p))?;
        }
        Format::Gitlab => output::text(&output::gitlab_pipeline(&p, &c.config)),
    }
    Ok(0)
}

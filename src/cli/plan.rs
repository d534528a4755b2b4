//! `imagepipe plan`.

use super::{Format, PlanArgs, output, settings};
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, Result};
use crate::plan;
use crate::recipe;
use crate::source::resolve::DefaultResolver;
use crate::store::OfflineState;

pub fn run(args: &PlanArgs, env: &Environment) -> Result<u8> {
    let c = &args.common;
    let release = settings::release(args.release.as_deref(), env)?;
    let catalog = catalog::load(&c.config)?;
    let ctx = settings::run_context(&catalog, release, env)?;
    let images = settings::select_images(&catalog, &c.only, ctx.release.is_some())?;
    let targets = settings::select_targets(&catalog, &c.target)?;
    let resolver = DefaultResolver;
    let mut identities = Vec::with_capacity(images.len());
    for image in images {
        let r = recipe::recipe(&catalog, image, &ctx, &resolver)
            .map_err(|e| Error::Failed(e.to_string()))?;
        let id =
            plan::identity(&catalog, image, &ctx, r).map_err(|e| Error::Usage(e.to_string()))?;
        identities.push((image, id));
    }
    let base = catalog.base_dir();
    let state = OfflineState { base: &base };
    let p = plan::plan(&identities, &targets, &catalog.build_store(), &ctx, &state);
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

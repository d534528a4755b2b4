//! `imagepipe release-notes`.

use super::{Format, ReleaseNotesArgs, output};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::settings;

pub fn run(args: &ReleaseNotesArgs, env: &Environment) -> Result<ExitStatus> {
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

//! `imagepipe build`.

use super::{BuildArgs, Format, output, settings};
use crate::builder::{self, Built};
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};

pub fn run(args: &BuildArgs, env: &Environment) -> Result<ExitStatus> {
    let s = settings::Settings::resolve(&args.common, &args.release, env, None, None)?;
    let (catalog, ctx) = (&s.catalog, &s.ctx);
    let threads = env.threads().map_err(Error::Usage)?;
    let identities = s.identities()?;
    let store_dir = catalog.build_store_dir();
    let mut built: Vec<Built> = Vec::new();
    let mut failures = Vec::new();
    for (image, id) in &identities {
        if image.format == catalog::Format::MachineImage {
            tracing::info!(
                "{}: a machine image is built in each cloud region by `imagepipe publish`",
                image.name.value
            );
            continue;
        }
        match builder::build_image(
            catalog,
            image,
            id,
            ctx,
            &store_dir,
            builder::Options {
                force: args.force,
                threads,
                ..builder::Options::default()
            },
        ) {
            Ok(b) => {
                // The local store's mutable tags follow its newest build, forward only.
                let layout = crate::store::layout::Layout::at(&store_dir.join(&b.image));
                let release = ctx.release.as_ref().filter(|_| image.kubernetes);
                let bytes = layout
                    .read_blob(&b.top.digest)
                    .map_err(|e| crate::error::Error::Failed(format!("{}: {e}", b.image)))?;
                // Images that require verification move them only in `publish`,
                // once `verify` passed.
                let tags = if id.requires_verification {
                    if !b.mutable_tags.is_empty() {
                        tracing::info!(
                            "{}: {} not moved: the image requires verification (`imagepipe verify`, then `imagepipe publish`)",
                            b.image,
                            b.mutable_tags.join(", ")
                        );
                    }
                    &[][..]
                } else {
                    &b.mutable_tags[..]
                };
                for t in tags {
                    let ok = id.prerelease_tags.contains(t);
                    match crate::publish::move_tag(&layout, &b.top, &bytes, t, release, ok) {
                        Ok(crate::publish::Moved::Held(why)) => {
                            tracing::info!("{}: {t} not moved: {why}", b.image);
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!("{}: moving {t}: {e}", b.image),
                    }
                }
                if args.format == Format::Table {
                    output::line(&format!("{} {} {}", b.image, b.tag, b.digest));
                }
                built.push(b);
            }
            Err(e) => {
                tracing::error!("{e}");
                failures
                    .push(serde_json::json!({ "image": image.name.value, "error": e.to_string() }));
            }
        }
    }
    if args.format == Format::Json {
        output::json(
            &serde_json::json!({ "store": store_dir, "items": built, "failures": failures }),
        )?;
    }
    if failures.is_empty() {
        Ok(ExitStatus::Success)
    } else {
        tracing::error!("{} of {} image(s) failed", failures.len(), identities.len());
        Ok(ExitStatus::Failed)
    }
}

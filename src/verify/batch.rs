//! Which disks `verify` boots, from which store, and booting them: the
//! planning and execution behind `imagepipe verify`.

use crate::catalog::{Format as ImageFormat, TargetKind};
use crate::error::Error;
use crate::recipe::TagValues;
use crate::settings::Settings;
use crate::store::Store;
use crate::template::Template;

use super::{AccelChoice, Job, Outcome};

/// One image to boot, with its store opened.
pub struct Pending {
    image: String,
    tag: String,
    store: Box<dyn Store>,
    top: crate::oci::Descriptor,
    settings: crate::catalog::Verify,
    expects: Vec<Option<String>>,
}

/// The disks to boot: every selected containerdisk and artifact image, as
/// the store `from` (a target name; default: the build store) holds its
/// immutable tag; what cannot be booted is a problem, said in words.
pub fn plan(s: &Settings, from: Option<&str>) -> Result<(Vec<Pending>, Vec<String>), Error> {
    let (catalog, ctx) = (&s.catalog, &s.ctx);
    let base = catalog.base_dir();
    let source = match from {
        None => catalog.build_store(),
        Some(name) => {
            let t = catalog
                .targets
                .iter()
                .find(|t| t.name.value == name)
                .ok_or_else(|| {
                    Error::Usage(format!("--from {name}: no such target in the catalog"))
                })?;
            if matches!(t.kind, TargetKind::Cloud { .. }) {
                return Err(Error::Usage(format!(
                    "--from {name}: a cloud region holds machine images, which verify cannot boot; give a layout or registry target"
                )));
            }
            t.clone()
        }
    };
    let identities = s.identities()?;
    let vars: Vec<&str> = catalog.variables.iter().map(|v| v.name.as_str()).collect();
    let mut pending = Vec::new();
    let mut problems = Vec::new();
    for (image, id) in &identities {
        if !matches!(
            image.format,
            ImageFormat::ContainerDisk | ImageFormat::Artifact
        ) {
            tracing::debug!(
                "{}: a {} image is not a disk: not booted",
                image.name.value,
                image.format.as_str()
            );
            continue;
        }
        if from.is_some() && !image.goes_to(&source) {
            continue;
        }
        let name = &image.name.value;
        let Some(tag) = id.tag.clone() else {
            problems.push(format!(
                "{name}: its recipe is not pinned, so its tag is known only after each build: pin the source to verify it"
            ));
            continue;
        };
        let Some(store) = crate::store::open(&source, &image.name, &base, &s.client) else {
            continue;
        };
        let top = match store.resolve(&crate::oci::Reference::tag(&tag)) {
            Ok(Some(top)) => top,
            Ok(None) => {
                problems.push(format!(
                    "{name}: {}:{tag} does not exist: run `imagepipe build` first{}",
                    store.reference(),
                    if from.is_some() {
                        " (or publish it to that target)"
                    } else {
                        ", or verify a target with --from"
                    }
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("{name}: reading {}:{tag}: {e}", store.reference()));
                continue;
            }
        };
        let settings = image
            .verification(&catalog.defaults)
            .cloned()
            .unwrap_or_default();
        let values = TagValues::new(&image.facts(), ctx, &id.recipe.hash);
        let mut expects = Vec::new();
        for c in &settings.checks {
            let Some(raw) = &c.expect else {
                expects.push(None);
                continue;
            };
            let rendered = Template::parse(raw, &vars)
                .map_err(|e| e.to_string())
                .and_then(|t| {
                    t.render_text(|p| values.lookup(p))
                        .map_err(|e| e.to_string())
                });
            match rendered {
                Ok(r) => expects.push(Some(r)),
                Err(e) => {
                    return Err(Error::Usage(format!(
                        "image `{name}`: check `{}`: expect `{}`: {e}",
                        c.run, raw.value
                    )));
                }
            }
        }
        pending.push(Pending {
            image: name.clone(),
            tag,
            store,
            top,
            settings,
            expects,
        });
    }
    Ok((pending, problems))
}

/// Boots every pending disk, up to `jobs` at once, each in a scratch
/// directory under `<base>/.imagepipe/work` (swept of runs that are gone),
/// and records each booted result as an attestation on its store.
pub fn execute(
    pending: &[Pending],
    base: &std::path::Path,
    jobs: usize,
    accel: AccelChoice,
) -> Result<Vec<Outcome>, Error> {
    let work_root = base.join(".imagepipe/work");
    let logs = base.join(".imagepipe/verify");
    std::fs::create_dir_all(&work_root)
        .map_err(|e| Error::Failed(format!("{}: {e}", work_root.display())))?;
    sweep(&work_root);
    let prefix = format!("verify-{}-", std::process::id());
    Ok(crate::pool::map(pending, jobs.max(1), |p| {
        let work = match tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&work_root)
        {
            Ok(w) => w,
            Err(e) => {
                return failed_early(
                    p,
                    format!("scratch directory in {}: {e}", work_root.display()),
                );
            }
        };
        crate::interrupt::register_dir(work.path());
        let job = Job {
            store: p.store.as_ref(),
            image: &p.image,
            tag: &p.tag,
            top: &p.top,
            settings: &p.settings,
            expects: p.expects.clone(),
            work: work.path(),
            serial_log: logs.join(&p.image).join(format!("{}.serial.log", p.tag)),
            accel,
        };
        let mut outcome = super::run(&job);
        if !outcome.booted {
            // Nothing was learnt about the image: nothing is recorded.
            report(&outcome);
            return outcome;
        }
        match super::attest(p.store.as_ref(), &p.top, &outcome) {
            Ok(d) => outcome.attestation = Some(d.digest.to_string()),
            Err(e) => {
                tracing::error!(
                    "{}: recording the result on {}: {e}",
                    p.image,
                    p.store.reference()
                );
                outcome.passed = false;
                outcome
                    .error
                    .get_or_insert_with(|| format!("the result could not be recorded: {e}"));
            }
        }
        report(&outcome);
        outcome
    }))
}

fn failed_early(p: &Pending, error: String) -> Outcome {
    let mut o = Outcome::new(&p.image, &p.tag, &p.top, p.store.as_ref());
    o.error = Some(error);
    o
}

/// Removes the scratch directories (`verify-<pid>-*`, a whole disk copy
/// each) of runs whose process is gone (killed with SIGKILL, a crashed
/// runner); a live run's are kept.
fn sweep(work_root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(work_root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("verify-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !crate::interrupt::running(pid) && std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!("removed {}, left by a run that is gone", e.path().display());
        }
    }
}

/// The log lines of one result: a failure names why, the serial log and its last lines.
fn report(o: &Outcome) {
    if o.passed {
        tracing::info!(
            "{}: {} passed verification in {:.1}s",
            o.image,
            o.tag,
            o.seconds
        );
        return;
    }
    let mut msg = format!(
        "{}: {} failed verification: {}",
        o.image,
        o.tag,
        o.error.as_deref().unwrap_or("unknown")
    );
    if let Some(log) = &o.serial_log {
        msg.push_str(&format!("\n  serial console: {}", log.display()));
    }
    for l in &o.console_tail {
        msg.push_str(&format!("\n  | {l}"));
    }
    tracing::error!("{msg}");
}

//! `imagepipe verify`.

use super::{AccelArg, Format, VerifyArgs, output};
use crate::catalog::{Format as ImageFormat, TargetKind};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::recipe::TagValues;
use crate::settings;
use crate::store::Store;
use crate::template::Template;
use crate::verify::{self, AccelChoice, Job, Outcome};

/// One image to boot, with its store opened.
struct Pending {
    image: String,
    tag: String,
    store: Box<dyn Store>,
    top: crate::oci::Descriptor,
    settings: crate::catalog::Verify,
    expects: Vec<Option<String>>,
}

pub fn run(args: &VerifyArgs, env: &Environment) -> Result<ExitStatus> {
    let s =
        settings::Settings::resolve(&args.common, &args.release, env, Some(&args.registry), None)?;
    let (catalog, ctx) = (&s.catalog, &s.ctx);
    let base = catalog.base_dir();
    let source = match &args.from {
        None => catalog.build_store(),
        Some(name) => {
            let t = catalog
                .targets
                .iter()
                .find(|t| &t.name.value == name)
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
    let mut outcomes: Vec<Outcome> = Vec::new();
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
        if args.from.is_some() && !image.goes_to(&source) {
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
                    if args.from.is_some() {
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
    let accel = match args.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    };
    let work_root = base.join(".imagepipe/work");
    let logs = base.join(".imagepipe/verify");
    std::fs::create_dir_all(&work_root)
        .map_err(|e| Error::Failed(format!("{}: {e}", work_root.display())))?;
    sweep(&work_root);
    let prefix = format!("verify-{}-", std::process::id());
    outcomes.extend(crate::pool::map(&pending, args.jobs.max(1), |p| {
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
        let mut outcome = verify::run(&job);
        if !outcome.booted {
            // Nothing was learnt about the image: nothing is recorded.
            report(&outcome);
            return outcome;
        }
        match verify::attest(p.store.as_ref(), &p.top, &outcome) {
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
    }));
    for p in &problems {
        tracing::error!("{p}");
    }
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({ "items": outcomes, "problems": problems }))?;
        }
        Format::Table => {
            if !outcomes.is_empty() {
                output::line(&format!(
                    "{:<24} {:<40} {:<7} {:<5} {:>7}",
                    "IMAGE", "TAG", "RESULT", "ACCEL", "SECONDS"
                ));
            }
            for o in &outcomes {
                output::line(&format!(
                    "{:<24} {:<40} {:<7} {:<5} {:>7.1}",
                    o.image,
                    o.tag,
                    if o.passed { "passed" } else { "FAILED" },
                    o.accel.map_or("-", |a| a.as_str()),
                    o.seconds
                ));
                for c in &o.checks {
                    output::line(&format!(
                        "  {} {}{}",
                        if c.passed { "ok  " } else { "FAIL" },
                        one_line(&c.run),
                        match (&c.expect, c.exit) {
                            (_, None) => " (not run)".to_owned(),
                            (Some(e), Some(0)) if !c.passed =>
                                format!(" (output lacks `{e}`: {})", first_line(&c.output)),
                            (_, Some(x)) if x != 0 =>
                                format!(" (exit {x}: {})", first_line(&c.output)),
                            _ => String::new(),
                        }
                    ));
                }
            }
        }
    }
    let failed = outcomes.iter().filter(|o| !o.passed).count() + problems.len();
    if pending.is_empty() && problems.is_empty() {
        tracing::warn!("no disk image to verify (containerdisk and artifact images are booted)");
    }
    if failed > 0 {
        tracing::error!("{failed} image(s) failed verification");
        return Ok(ExitStatus::Failed);
    }
    Ok(ExitStatus::Success)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// A multi-line check as one table line: its first line and how many follow.
fn one_line(run: &str) -> String {
    let mut lines = run.trim().lines();
    let first = lines.next().unwrap_or("");
    match lines.count() {
        0 => first.to_owned(),
        n => format!("{first} … (+{n} line{})", if n == 1 { "" } else { "s" }),
    }
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

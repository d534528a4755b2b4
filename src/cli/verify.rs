//! `imagepipe verify`.

use super::{AccelArg, Format, VerifyArgs, output};
use crate::env::Environment;
use crate::error::{ExitStatus, Result};
use crate::settings;
use crate::verify::{self, AccelChoice};

pub fn run(args: &VerifyArgs, env: &Environment) -> Result<ExitStatus> {
    let s =
        settings::Settings::resolve(&args.common, &args.release, env, Some(&args.registry), None)?;
    let (pending, problems) = verify::batch::plan(&s, args.from.as_deref())?;
    let accel = match args.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    };
    let outcomes = verify::batch::execute(&pending, &s.catalog.base_dir(), args.jobs, accel)?;
    for p in &problems {
        tracing::error!("{p}");
    }
    match args.format {
        Format::Json => {
            output::json(&crate::report::Verify {
                schema_version: crate::report::SCHEMA_VERSION,
                items: &outcomes,
                problems: &problems,
            })?;
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

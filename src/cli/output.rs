//! Everything imagepipe prints: results on stdout, problems on stderr.
#![allow(clippy::print_stderr)]

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use crate::catalog::CatalogError;
use crate::error::{Error, ExitStatus, Result};
use crate::plan::{Action, Plan};

pub fn line(s: &str) {
    text(&format!("{s}\n"));
}

static WRITE_FAILED: AtomicBool = AtomicBool::new(false);
static JSON_PRINTED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout. A reader that went away (`imagepipe … | head`) is not
/// an error: the rest is dropped, never a panic. Any other failure (a full
/// disk under `> plan.json`) is said, and fails the run ([`write_failed`]).
pub fn text(s: &str) {
    let mut out = std::io::stdout().lock();
    let written = out.write_all(s.as_bytes()).and_then(|()| out.flush());
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
        && !WRITE_FAILED.swap(true, Ordering::Relaxed)
    {
        eprintln!("error: writing to standard output: {e}");
    }
}

/// Whether writing a result to stdout failed (other than a closed pipe).
pub fn write_failed() -> bool {
    WRITE_FAILED.load(Ordering::Relaxed)
}

pub fn json(value: &impl Serialize) -> Result<ExitStatus> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Failed(e.to_string()))?;
    line(&s);
    JSON_PRINTED.store(true, Ordering::Relaxed);
    Ok(ExitStatus::Success)
}

/// A failure as `--format json` prints it: `{"schema_version", "error": {…}}`
/// — unless the command already printed its result (stdout stays one
/// document; the error is on stderr and in the exit code).
pub fn json_error(e: &Error) {
    if JSON_PRINTED.load(Ordering::Relaxed) {
        return;
    }
    let status = e.exit_status();
    let message = match e {
        Error::Catalog(c) => c
            .diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    };
    let _ = json(&crate::report::Failure {
        schema_version: crate::report::SCHEMA_VERSION,
        error: crate::report::ErrorBody {
            message,
            kind: if status == ExitStatus::Invalid {
                "invalid"
            } else {
                "failed"
            },
            exit_code: status.code(),
        },
    });
}

/// Catalog problems, one `file:line:col: error: … — fix` each; with snippets on a terminal.
pub fn diagnostics(e: &CatalogError) {
    let tty = std::io::stderr().is_terminal();
    for d in &e.diagnostics {
        match (&e.source_text, tty) {
            (Some(src), true) => eprintln!("{}\n", d.render_with_snippet(src)),
            _ => eprintln!("{d}"),
        }
    }
    eprintln!(
        "{}: {} problem(s); nothing was done",
        e.file.display(),
        e.diagnostics.len()
    );
}

pub fn error(e: &Error) {
    match e {
        Error::Catalog(c) => diagnostics(c),
        other => eprintln!("error: {other}"),
    }
}

/// Rows as aligned columns.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let fmt_row = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    (*c).to_owned()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = fmt_row(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&fmt_row(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    text(&out);
}

/// The columns of a plan, shared by the table and the CI job summary.
pub const PLAN_HEADER: [&str; 6] = ["IMAGE", "TARGET", "TAG", "HASH", "ACTION", "REASON"];

/// One row per plan item, in [`PLAN_HEADER`] order.
pub fn plan_rows(p: &Plan) -> Vec<Vec<String>> {
    p.items
        .iter()
        .map(|i| {
            vec![
                i.image.clone(),
                i.target.clone(),
                i.tag
                    .clone()
                    .unwrap_or_else(|| "(from built content)".into()),
                i.hash.as_deref().map_or("-", |h| &h[..12]).to_owned(),
                i.action.as_str().to_owned(),
                i.reason.clone(),
            ]
        })
        .collect()
}

pub fn plan_table(p: &Plan) {
    let rows = plan_rows(p);
    table(&PLAN_HEADER, &rows);
    let count = |a: Action| p.items.iter().filter(|i| i.action == a).count();
    let waiting = count(Action::Verify);
    let conflicts = count(Action::Conflict);
    eprintln!(
        "{} item(s): {} build, {} copy, {} skip{}{}",
        p.items.len(),
        count(Action::Build),
        count(Action::Copy),
        count(Action::Skip),
        if waiting > 0 {
            format!(", {waiting} waiting for verification")
        } else {
            String::new()
        },
        if conflicts > 0 {
            format!(", {conflicts} in conflict (publish fails them; see the reasons)")
        } else {
            String::new()
        }
    );
}

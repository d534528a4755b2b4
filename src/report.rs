//! What `--format json` prints: one shape per command, each carrying
//! `schema_version`, one vocabulary (`image`, `target`, `reference`,
//! `digest`, RFC 3339 times), an `error` object when the command fails
//! before it has a result, and a JSON Schema for each
//! (`imagepipe schema --output …`).

use std::path::Path;

use serde::Serialize;

use crate::error::Error;

pub use crate::schema_version::SCHEMA_VERSION;

/// `publish --format json` (and `--metadata-file`).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Publish<'a> {
    pub schema_version: u32,
    pub items: &'a [crate::publish::Item],
}

/// `cleanup --format json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Cleanup<'a> {
    pub schema_version: u32,
    /// Whether deletions were applied (`--apply`), or only planned.
    pub apply: bool,
    pub items: &'a [crate::retention::Item],
    /// Problems that made the plan keep what it could not judge (fail closed).
    pub errors: &'a [String],
    pub unsupported_branches: &'a [String],
    pub applied: &'a [crate::cleanup::Applied],
    pub collected: &'a [crate::cleanup::Collected],
}

/// `verify --format json`.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Verify<'a> {
    pub schema_version: u32,
    pub items: &'a [crate::verify::Outcome],
    /// Images that could not be booted at all, and why.
    pub problems: &'a [String],
}

/// What any command prints on stdout under `--format json` when it fails
/// before it has a result of its own.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Failure {
    pub schema_version: u32,
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// What went wrong and how to fix it (the message stderr shows).
    pub message: String,
    /// `invalid` (exit 2: a wrong catalog, flag or value) or `failed` (exit 1).
    pub kind: &'static str,
    /// The process exit code.
    pub exit_code: u8,
}

/// The outputs that have a schema, by `--output` name.
pub const OUTPUTS: [&str; 6] = [
    "plan",
    "publish",
    "cleanup",
    "verify",
    "release-notes",
    "error",
];

/// The JSON Schema of one output; `None` for an unknown name.
pub fn schema(output: &str) -> Option<serde_json::Value> {
    let s = match output {
        "plan" => schemars::schema_for!(crate::plan::Plan),
        "publish" => schemars::schema_for!(Publish<'static>),
        "cleanup" => schemars::schema_for!(Cleanup<'static>),
        "verify" => schemars::schema_for!(Verify<'static>),
        "release-notes" => schemars::schema_for!(crate::release_notes::Notes),
        "error" => schemars::schema_for!(Failure),
        _ => return None,
    };
    serde_json::to_value(s).ok()
}

/// The directory `--metadata-file` is written in; checked before any work.
pub fn metadata_dir(file: &Path) -> Result<std::path::PathBuf, Error> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--metadata-file {}: directory {} does not exist — create it or choose another path",
            file.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// Writes the publish results as `--format json` prints them, atomically:
/// a reader sees the previous file or the whole new one, never a part.
pub fn write_metadata(file: &Path, items: &[crate::publish::Item]) -> Result<(), Error> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Failed(format!("--metadata-file {}: {e}", file.display()))
    };
    let text = serde_json::to_vec_pretty(&Publish {
        schema_version: SCHEMA_VERSION,
        items,
    })
    .map_err(|e| fail(&e))?;
    metadata_dir(file)?;
    crate::files::write_atomic(file, &text).map_err(|e| fail(&e))
}

//! The catalog (`images.yml`): model, parsing with locations, validation, schema.

pub mod decode;
pub mod diag;
pub mod model;
pub mod schema;
pub mod validate;
pub mod yaml;

use std::io::Read;
use std::path::Path;

pub use diag::Diagnostic;
pub use model::*;

use diag::{Diagnostics, Span};

/// Catalogs larger than this are refused: no real catalog comes close.
pub const MAX_CATALOG_BYTES: u64 = 8 << 20;

/// Why a catalog could not be loaded: every problem found, in file order.
#[derive(Debug, thiserror::Error)]
#[error("{} problem(s) in {}", .diagnostics.len(), .file.display())]
pub struct CatalogError {
    pub file: std::path::PathBuf,
    pub diagnostics: Vec<Diagnostic>,
    /// The text, when it could be read, for rendering snippets.
    pub source_text: Option<String>,
}

/// Reads, parses, decodes and validates a catalog file.
pub fn load(path: &Path) -> Result<Catalog, CatalogError> {
    let mut d = Diagnostics::new(path);
    let fail = |d: Diagnostics, text: Option<String>| CatalogError {
        file: path.to_path_buf(),
        diagnostics: d.into_sorted(),
        source_text: text,
    };
    let text = match read_text(path) {
        Ok(t) => t,
        Err((span, message, help)) => {
            d.error(span, message, help);
            return Err(fail(d, None));
        }
    };
    match parse(path, &text, &mut d) {
        Some(c) if d.is_empty() => Ok(c),
        _ => Err(fail(d, Some(text))),
    }
}

/// Parses, decodes and validates catalog text read elsewhere (a git branch);
/// `path` is where it would be.
pub fn load_text(path: &Path, text: &str) -> Result<Catalog, CatalogError> {
    let mut d = Diagnostics::new(path);
    match parse(path, text, &mut d) {
        Some(c) if d.is_empty() => Ok(c),
        _ => Err(CatalogError {
            file: path.to_path_buf(),
            diagnostics: d.into_sorted(),
            source_text: Some(text.to_owned()),
        }),
    }
}

/// Parses catalog text (already read) and records every problem in `d`,
/// which starts empty.
pub fn parse(path: &Path, text: &str, d: &mut Diagnostics) -> Option<Catalog> {
    let root = yaml::parse(text, d);
    if root.is_none() && d.is_empty() {
        // Nothing but comments or blank lines.
        d.error(
            Span::new(1, 1),
            "the catalog is empty",
            "start with `version: 1` and an `images:` list (see docs/catalog.md)",
        );
        return None;
    }
    let root = root?;
    if root.is_null() {
        d.error(
            Span::new(1, 1),
            "the catalog is empty",
            "start with `version: 1` and an `images:` list (see docs/catalog.md)",
        );
        return None;
    }
    let catalog = decode::catalog(path, &root, d)?;
    validate::check(&catalog, d);
    Some(catalog)
}

type ReadProblem = (Span, String, String);

fn read_text(path: &Path) -> Result<String, ReadProblem> {
    let at = Span::new(1, 1);
    let meta = std::fs::metadata(path).map_err(|e| {
        let help = if e.kind() == std::io::ErrorKind::NotFound {
            "pass the catalog with `-c path/to/images.yml`, or run where `images.yml` is".to_owned()
        } else {
            "check the file's permissions".to_owned()
        };
        (
            at,
            format!(
                "cannot read the catalog: {}",
                crate::io_reason::io_reason(&e)
            ),
            help,
        )
    })?;
    if meta.is_dir() {
        return Err((
            at,
            "the catalog path is a directory".into(),
            "point `-c` at the `images.yml` file inside it".into(),
        ));
    }
    if meta.len() > MAX_CATALOG_BYTES {
        return Err((
            at,
            format!(
                "the catalog is {} bytes, more than the {MAX_CATALOG_BYTES}-byte limit",
                meta.len()
            ),
            "split it, or check that this is the right file".into(),
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CATALOG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            (
                at,
                format!(
                    "cannot read the catalog: {}",
                    crate::io_reason::io_reason(&e)
                ),
                "check the file's permissions".into(),
            )
        })?;
    if bytes.len() as u64 > MAX_CATALOG_BYTES {
        return Err((
            at,
            format!("the catalog is larger than the {MAX_CATALOG_BYTES}-byte limit"),
            "split it, or check that this is the right file".into(),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let valid = std::str::from_utf8(valid).unwrap_or_default();
        let line = valid.matches('\n').count() + 1;
        let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (
            Span::new(line, col),
            "the catalog is not valid UTF-8".into(),
            "save the file as UTF-8".into(),
        )
    })
}

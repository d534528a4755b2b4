//! `imagepipe validate`.

use serde_json::json;

use super::{Common, output, table_or_json};
use crate::catalog;
use crate::error::{EXIT_INVALID, Result};

pub fn run(args: &Common) -> Result<u8> {
    table_or_json(args.format)?;
    match catalog::load(&args.config) {
        Ok(c) => {
            if args.format == super::Format::Json {
                output::json(&json!({
                    "file": c.path, "valid": true, "images": c.images.len(), "targets": c.targets.len(), "diagnostics": [],
                }))?;
            } else {
                output::line(&format!(
                    "{}: ok ({} images, {} targets)",
                    c.path.display(),
                    c.images.len(),
                    c.targets.len()
                ));
            }
            Ok(0)
        }
        Err(e) => {
            output::diagnostics(&e);
            if args.format == super::Format::Json {
                output::json(
                    &json!({ "file": e.file, "valid": false, "diagnostics": e.diagnostics }),
                )?;
            }
            Ok(EXIT_INVALID)
        }
    }
}

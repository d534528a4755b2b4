//! `imagepipe validate`.

use serde_json::json;

use super::{ValidateArgs, output};
use crate::catalog;
use crate::error::{ExitStatus, Result};

pub fn run(args: &ValidateArgs) -> Result<ExitStatus> {
    match catalog::load(&args.common.config) {
        Ok(c) => {
            if args.format == super::Format::Json {
                output::json(&json!({
                    "schema_version": crate::report::SCHEMA_VERSION,
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
            Ok(ExitStatus::Success)
        }
        Err(e) => {
            output::diagnostics(&e);
            if args.format == super::Format::Json {
                output::json(
                    &json!({ "schema_version": crate::report::SCHEMA_VERSION, "file": e.file, "valid": false, "diagnostics": e.diagnostics }),
                )?;
            }
            Ok(ExitStatus::Invalid)
        }
    }
}

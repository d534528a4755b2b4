//! `imagepipe update` (the lock beside the catalog) and `imagepipe pin`
//! (the consumer file).

use std::collections::BTreeMap;

use super::{Format, PinArgs, UpdateArgs, output};
use crate::catalog;
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::lock::{self, Lock};
use crate::settings;

pub fn run(args: &UpdateArgs, _env: &Environment) -> Result<ExitStatus> {
    let catalog = catalog::load(&args.common.config)?;
    let old = lock::read(&catalog.path)
        .map_err(Error::Usage)?
        .unwrap_or_else(|| Lock {
            version: lock::LOCK_VERSION,
            sources: BTreeMap::new(),
        });
    let lock::Refreshed {
        lock: new,
        rows,
        removed: dropped,
        moved,
    } = lock::refresh(&catalog, &old)?;
    let path = lock::path_for(&catalog.path);
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({
                "schema_version": crate::report::SCHEMA_VERSION,
                "lock": path.display().to_string(),
                "sources": rows,
                "removed": dropped,
                "moved": moved,
            }))?;
        }
        Format::Table => {
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.status.to_owned(),
                        r.url.clone(),
                        r.previous
                            .as_ref()
                            .map_or_else(|| r.digest.clone(), |p| format!("{p} → {}", r.digest)),
                    ]
                })
                .chain(
                    dropped
                        .iter()
                        .map(|u| vec!["removed".into(), (*u).clone(), String::new()]),
                )
                .collect();
            output::table(&["STATUS", "URL", "CHECKSUM"], &table);
        }
    }
    if args.check {
        if moved {
            tracing::error!(
                "upstream moved: run `imagepipe update` and commit {}",
                path.display()
            );
            return Ok(ExitStatus::Failed);
        }
        return Ok(ExitStatus::Success);
    }
    if new != old || !path.exists() {
        lock::write(&catalog.path, &new).map_err(Error::Failed)?;
        tracing::info!("wrote {}", path.display());
    }
    Ok(ExitStatus::Success)
}

pub fn pin(args: &PinArgs, env: &Environment) -> Result<ExitStatus> {
    let s =
        settings::Settings::resolve(&args.common, &args.release, env, Some(&args.registry), None)?;
    let pins = crate::pin::references(&s, args.digest)?;
    let old = match std::fs::read_to_string(&args.file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "# Immutable image references, written by `imagepipe pin {}`.\n",
            args.file.display()
        ),
        Err(e) => {
            return Err(Error::Failed(format!(
                "{}: {}",
                args.file.display(),
                crate::io_reason::io_reason(&e)
            )));
        }
    };
    let new = crate::pin::pinned_text(&old, &pins)
        .map_err(|e| Error::Usage(format!("{}: {e}", args.file.display())))?;
    if new != old {
        let fail =
            |e: &dyn std::fmt::Display| Error::Failed(format!("{}: {e}", args.file.display()));
        if let Some(dir) = args.file.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        crate::files::write_atomic(&args.file, new.as_bytes()).map_err(|e| fail(&e))?;
    }
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({
                "schema_version": crate::report::SCHEMA_VERSION,
                "file": args.file.display().to_string(),
                "pins": pins,
            }))?;
        }
        Format::Table => {
            output::text(
                &pins
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect::<String>(),
            );
        }
    }
    Ok(ExitStatus::Success)
}

//! `imagepipe cleanup`.

use std::collections::BTreeMap;

use super::{CleanupArgs, Format, output};
use crate::cleanup::{self, Applied};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::retention::{self, Decision};
use crate::settings;

pub fn run(args: &CleanupArgs, env: &Environment) -> Result<ExitStatus> {
    let c = &args.common;
    // Cleanup judges every release's tags: no release is needed or read.
    let s = settings::Settings::resolve_without_release(c, env, &args.registry)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let prepared = cleanup::prepare(&s, &c.config, env, now)?;
    let plan = &prepared.plan;
    for e in &plan.errors {
        tracing::error!("{e}");
    }

    let json = args.format == Format::Json;
    let audit = |a: &Applied| {
        if json {
            tracing::info!(target: "audit", "{}", serde_json::to_string(a).unwrap_or_default());
        } else {
            tracing::info!(
                "{} {}:{} ({}): {}",
                a.result.as_str(),
                a.repository,
                a.tag,
                a.digest,
                a.detail
            );
        }
    };
    let done = if args.apply {
        cleanup::execute(&prepared, args.max_delete, &audit)
    } else {
        cleanup::Executed::default()
    };
    let failed = done.failed || !plan.errors.is_empty();
    let (applied, garbage) = (done.applied, done.collected);
    let mut rows: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in &plan.items {
        let e = rows.entry(&i.repository).or_default();
        if i.decision == Decision::Keep {
            e.0 += 1
        } else {
            e.1 += 1
        }
    }
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(r, (k, d))| vec![r.to_owned(), k.to_string(), d.to_string()])
        .collect();
    let title = if args.apply {
        "imagepipe cleanup --apply"
    } else {
        "imagepipe cleanup (dry run)"
    };
    let mut summary = format!(
        "### {title}\n\n{}",
        crate::ci::markdown_table(&["repository", "keep", "delete"], &rows)
    );
    for e in &plan.errors {
        summary.push_str(&format!("\n- error: {e}"));
    }
    // What was done is printed first: a failing job summary must not hide it.
    match args.format {
        Format::Json => {
            output::json(&crate::report::Cleanup {
                schema_version: crate::report::SCHEMA_VERSION,
                apply: args.apply,
                items: &plan.items,
                errors: &plan.errors,
                unsupported_branches: &plan.unsupported_branches,
                applied: &applied,
                collected: &garbage,
            })?;
        }
        _ => print_table(plan, args.apply),
    }
    crate::ci::step_summary(env, &summary)
        .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    Ok(ExitStatus::failed_if(failed))
}

fn print_table(plan: &retention::Plan, apply: bool) {
    let mut by_repo: BTreeMap<&str, Vec<&retention::Item>> = BTreeMap::new();
    for i in &plan.items {
        by_repo.entry(&i.repository).or_default().push(i);
    }
    let mut out = String::new();
    for (repo, items) in &by_repo {
        let deleting: Vec<_> = items
            .iter()
            .filter(|i| i.decision == Decision::Delete)
            .collect();
        // Bytes the registry's garbage collector can reclaim: images none of
        // whose tags is kept.
        let kept: std::collections::HashSet<&crate::oci::Digest> = items
            .iter()
            .filter(|i| i.decision == Decision::Keep)
            .map(|i| &i.digest)
            .collect();
        let mut freed: BTreeMap<&crate::oci::Digest, u64> = BTreeMap::new();
        for i in deleting.iter().filter(|i| !kept.contains(&i.digest)) {
            freed.insert(&i.digest, i.size.unwrap_or(0));
        }
        out.push_str(&format!(
            "{repo}: {} tag(s), keep {}, delete {} (up to {} bytes once the registry collects garbage){}\n",
            items.len(),
            items.len() - deleting.len(),
            deleting.len(),
            freed.values().sum::<u64>(),
            if apply { "" } else { " [dry run]" }
        ));
        for i in items {
            let mut why = i.reasons.join(", ");
            if !i.referenced_by.is_empty() {
                why.push_str(&format!(" ({})", i.referenced_by.join(", ")));
            }
            let decision = match i.decision {
                Decision::Keep => "keep",
                Decision::Delete => "delete",
            };
            out.push_str(&format!(
                "  {decision:<6}  {:<40}  {}  {why}\n",
                i.tag,
                &i.digest.to_string()[..19]
            ));
        }
    }
    if !plan.unsupported_branches.is_empty() {
        // The first few; all of them are in `--format json`.
        const SHOWN: usize = 10;
        let all = &plan.unsupported_branches;
        let more = all.len().saturating_sub(SHOWN);
        out.push_str(&format!(
            "release branches past supported_releases (not counted): {}{}\n",
            all[..all.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more (all in --format json)")
            } else {
                String::new()
            }
        ));
    }
    output::text(&out);
}

//! `imagepipe cleanup`.

use std::collections::BTreeMap;

use super::{CleanupArgs, Format, output};
use crate::cleanup::{self, Applied};
use crate::env::Environment;
use crate::error::{Error, ExitStatus, Result};
use crate::gitrefs;
use crate::retention::{self, Decision, References, Repo, Rules};
use crate::settings;

pub fn run(args: &CleanupArgs, env: &Environment) -> Result<ExitStatus> {
    let c = &args.common;
    // Cleanup judges every release's tags: no release is needed or read.
    let s = settings::Settings::resolve_without_release(c, env, &args.registry)?;
    let (catalog, client) = (&s.catalog, &s.client);
    let Some(ret) = &catalog.retention else {
        return Err(Error::Usage(format!(
            "{}: no `retention:` section, so nothing can be cleaned up — see docs/cleanup.md",
            c.config.display()
        )));
    };
    let targets = s.targets();
    let names: Vec<String> = c.only.clone();
    for n in &names {
        if catalog.image(n).is_none() {
            return Err(Error::Usage(format!(
                "--only {n}: the catalog has no such image"
            )));
        }
    }
    let base = catalog.base_dir();

    // Git references (fail closed: an unreadable branch deletes nothing),
    // and the immutable tags each kept branch's catalog builds.
    let mut branch_built = BTreeMap::new();
    let (refs, git_error, unsupported) = match &ret.git {
        None => (References::default(), None, Vec::new()),
        Some(g) => {
            let repo_dir = base.join(&g.repo);
            let in_repo = std::path::absolute(&c.config)
                .ok()
                .and_then(|p| p.canonicalize().ok())
                .zip(repo_dir.canonicalize().ok())
                .and_then(|(cfg, repo)| {
                    cfg.strip_prefix(repo)
                        .ok()
                        .map(|r| r.to_string_lossy().into_owned())
                });
            let branches: Vec<String> = g.branches.iter().map(|b| b.value.clone()).collect();
            let paths: Vec<String> = g.paths.iter().map(|p| p.value.clone()).collect();
            let default_branch = match (&g.default_branch, env.get(crate::env::CI_DEFAULT_BRANCH)) {
                (Some(b), _) => Some((b.as_str(), "retention.git.default_branch")),
                (None, Some(b)) => Some((b, crate::env::CI_DEFAULT_BRANCH)),
                (None, None) => None,
            };
            let rules = gitrefs::Rules {
                branches: &branches,
                supported: g.supported_releases,
                paths: &paths,
                default_branch,
                release_pattern: &g.release_pattern,
                head_fallback: env.get(crate::env::GITHUB_ACTIONS) != Some("true"),
                catalog: in_repo.as_deref(),
            };
            match gitrefs::scan(&repo_dir, &rules) {
                Ok(scan) => {
                    tracing::info!(
                        "git: default branch {} ({})",
                        scan.default_branch,
                        scan.default_from
                    );
                    for b in &scan.branches {
                        tracing::info!(
                            "git: {} ({}): {} file(s) scanned",
                            b.branch,
                            b.reference,
                            b.files.len()
                        );
                    }
                    branch_built = branch_tags(&scan, &c.config, env);
                    (References::from_scan(&scan), None, scan.unsupported)
                }
                Err(e) => (References::default(), Some(e.to_string()), Vec::new()),
            }
        }
    };

    // The immutable tag each image builds now is never expired (a revert
    // brings an old recipe back, and `latest` with it).
    let current = |name: &str| -> Vec<String> {
        let mut tags = branch_built.get(name).cloned().unwrap_or_default();
        match settings::identities(catalog, &[name.to_owned()], &s.ctx) {
            Ok(ids) => tags.extend(ids.into_iter().filter_map(|(_, id)| id.tag)),
            Err(e) => {
                tracing::warn!(
                    "{name}: cannot tell which tag the catalog builds now ({e}); its tags are judged by the other rules"
                );
            }
        }
        tags.sort();
        tags.dedup();
        tags
    };

    // What each store holds, per managed repository: registries and layouts alike.
    let mut repos = Vec::new();
    let mut stores: BTreeMap<String, Box<dyn crate::store::Store>> = BTreeMap::new();
    for image in catalog
        .images
        .iter()
        .filter(|i| names.is_empty() || names.contains(&i.name.value))
    {
        let now_built = current(&image.name.value);
        for t in targets.iter().filter(|t| image.goes_to(t)) {
            let Some(store) = crate::store::open(t, &image.name, &base, client) else {
                continue;
            };
            let reference = store.reference();
            tracing::info!("listing {reference}");
            let vars: Vec<&str> = catalog.variables.iter().map(|v| v.name.as_str()).collect();
            let templates = image
                .tag_templates(&catalog.defaults)
                .iter()
                .filter_map(|t| crate::template::Template::parse(t, &vars).ok())
                .map(|t| t.matcher(&image.facts()))
                .collect();
            repos.push(Repo {
                target: t.name.value.clone(),
                repository: reference.clone(),
                // What references name: `namespace/name` on a registry; a
                // layout's images by their name.
                path: store
                    .registry_repository()
                    .map_or_else(|| image.name.value.clone(), |r| r.path.clone()),
                image: image.name.value.clone(),
                templates,
                current: now_built.clone(),
                tags: cleanup::list(store.as_ref()),
            });
            stores.insert(reference, store);
        }
    }
    let mut protect = globset::GlobSetBuilder::new();
    for p in &ret.protect {
        protect.add(globset::Glob::new(p).map_err(|e| Error::Usage(e.to_string()))?);
    }
    let rules = Rules {
        keep_last: ret.keep_last,
        max_age_secs: ret.max_age.as_ref().map(|d| d.value.as_secs()),
        protect: protect.build().map_err(|e| Error::Usage(e.to_string()))?,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let plan = retention::plan(
        &repos,
        &refs,
        &rules,
        now,
        git_error.as_deref(),
        &unsupported,
    );
    for e in &plan.errors {
        tracing::error!("{e}");
    }

    let mut applied: Vec<Applied> = Vec::new();
    let mut garbage: Vec<cleanup::Collected> = Vec::new();
    let mut failed = !plan.errors.is_empty();
    if args.apply {
        let limit = args.max_delete.unwrap_or(ret.max_delete);
        let count = cleanup::deletion_count(&plan);
        if count as u64 > limit {
            tracing::error!(
                "the plan deletes {count} tags, more than max_delete {limit}: nothing deleted (raise it with --max-delete {count} after checking the plan)"
            );
            failed = true;
        } else if plan.errors.is_empty() {
            let json = args.format == Format::Json;
            let (done, collected) = cleanup::apply(&stores, &plan, &|a: &Applied| {
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
            });
            for c in &collected {
                match &c.collected {
                    Some(g) => tracing::info!(
                        "{}: {} unreferenced blob(s) removed ({} bytes), {} attestation(s) of removed images",
                        c.repository,
                        g.blobs,
                        g.bytes,
                        g.referrers
                    ),
                    None => tracing::info!(
                        "{}: another run is writing to this layout: its unreferenced blobs are removed by the next cleanup",
                        c.repository
                    ),
                }
            }
            applied = done;
            garbage = collected;
            failed |= applied.iter().any(|a| a.result == cleanup::Outcome::Failed);
        } else {
            tracing::error!("not applying: the plan has errors (fail closed)");
        }
    }
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
    crate::ci::step_summary(env, &summary)
        .map_err(|e| Error::Failed(format!("{}: {e}", crate::env::GITHUB_STEP_SUMMARY)))?;
    match args.format {
        Format::Json => {
            output::json(&serde_json::json!({
                "apply": args.apply,
                "items": plan.items,
                "errors": plan.errors,
                "unsupported_branches": plan.unsupported_branches,
                "applied": applied,
                "collected": garbage,
            }))?;
        }
        _ => print_table(&plan, args.apply),
    }
    Ok(ExitStatus::failed_if(failed))
}

/// The immutable tags the kept branches' catalogs build, by image. A
/// catalog several branches (or a branch and its remote-tracking ref) share
/// is evaluated once.
fn branch_tags(
    scan: &gitrefs::Scan,
    config: &std::path::Path,
    env: &Environment,
) -> BTreeMap<String, Vec<String>> {
    let mut built: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for b in &scan.branches {
        let Some(text) = b.catalog.as_ref().filter(|t| seen.insert(t.as_slice())) else {
            continue;
        };
        match settings::branch_tags(config, &String::from_utf8_lossy(text), env) {
            Ok((tags, left_out)) => {
                for (image, tag) in tags {
                    built.entry(image).or_default().push(tag);
                }
                for (image, why) in left_out {
                    tracing::info!(
                        "git: {}: which tag {image} builds there is not known here ({why}); the other rules judge its tags",
                        b.branch
                    );
                }
            }
            Err(e) => tracing::warn!(
                "git: {}: its catalog: {e}; the tags it builds are judged by the other rules",
                b.branch
            ),
        }
    }
    built
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

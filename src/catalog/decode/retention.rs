//! `retention:`: what cleanup keeps.

use super::*;

pub(super) fn retention(node: &Node, d: &mut Diagnostics) -> Option<Retention> {
    let f = Fields::of(node, "`retention`", RETENTION_KEYS, d)?;
    let keep_last = f.get("keep_last").and_then(|n| uint(n, d));
    let max_age = f.get("max_age").and_then(|n| {
        let s = string(n, d)?;
        match parse_duration(&s.value) {
            Some(dur) => Some(Spanned::new(dur, s.span)),
            None => {
                d.error(
                    s.span,
                    format!("`{}` is not a duration", s.value),
                    "write a number and a unit: `30d`, `12h`, `2w`, `90m`, or combined `1d12h`",
                );
                None
            }
        }
    });
    let protect = f.get("protect").map(|n| strings(n, d)).unwrap_or_default();
    let max_delete = f
        .get("max_delete")
        .and_then(|n| uint(n, d))
        .unwrap_or(DEFAULT_MAX_DELETE);
    let git = f.get("git").and_then(|n| {
        let g = Fields::of(n, "`retention.git`", GIT_KEYS, d)?;
        Some(GitRetention {
            repo: g
                .get("repo")
                .and_then(|n| string(n, d))
                .map_or_else(|| PathBuf::from("."), |s| PathBuf::from(s.value)),
            branches: g.get("branches").map(|n| strings(n, d)).unwrap_or_default(),
            supported_releases: g
                .get("supported_releases")
                .and_then(|n| uint(n, d))
                .unwrap_or(3),
            paths: g.get("paths").map(|n| strings(n, d)).unwrap_or_default(),
            default_branch: g
                .get("default_branch")
                .and_then(|n| string(n, d))
                .map(|s| s.value),
            release_pattern: match g.get("release_pattern").and_then(|n| string(n, d)) {
                Some(p) if !release_pattern_ok(&p.value) => {
                    d.error(
                        p.span,
                        format!("release pattern `{}` needs `{{major}}` and takes only `{{major}}`, `{{minor}}`, `{{patch}}` as placeholders", p.value),
                        "write it with the numbers as placeholders, e.g. `release-{major}.{minor}`",
                    );
                    DEFAULT_RELEASE_PATTERN.to_owned()
                }
                Some(p) => p.value,
                None => DEFAULT_RELEASE_PATTERN.to_owned(),
            },
        })
    });
    Some(Retention {
        keep_last,
        max_age,
        protect,
        max_delete,
        git,
        span: node.span,
    })
}

/// `{major}` present; no placeholder but `{major}`, `{minor}`, `{patch}`.
fn release_pattern_ok(p: &str) -> bool {
    let mut rest = p;
    while let Some(i) = rest.find('{') {
        let Some(j) = rest[i..].find('}') else {
            return false;
        };
        if !["{major}", "{minor}", "{patch}"].contains(&&rest[i..=i + j]) {
            return false;
        }
        rest = &rest[i + j + 1..];
    }
    p.contains("{major}")
}

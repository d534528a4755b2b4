//! `targets:`: layouts, registries and cloud regions.

use super::*;

pub(super) fn target(node: &Node, d: &mut Diagnostics) -> Option<Target> {
    let f = Fields::of(node, "a target", TARGET_KEYS, d)?;
    let name = f.required_string("name", "a target", d, "give the target a `name:`")?;
    let layout = f.get("layout").and_then(|n| string(n, d));
    let registry = f.get("registry").and_then(|n| string(n, d));
    let namespace = f.get("namespace").and_then(|n| string(n, d));
    let insecure = f
        .get("insecure")
        .and_then(|n| boolean(n, d))
        .unwrap_or(false);
    let chunk_size = f.get("chunk_size").and_then(|n| {
        let s = string(n, d)?;
        match parse_size(&s.value) {
            Some(v) if v >= MIN_CHUNK => Some(v),
            Some(_) => {
                d.error(
                    s.span,
                    format!("chunk size `{}` is below 5 MiB", s.value),
                    "registries such as ECR refuse smaller parts: use at least `5MiB`",
                );
                None
            }
            None => {
                d.error(
                    s.span,
                    format!("`{}` is not a size", s.value),
                    "write a number of bytes with an optional unit: `16MiB`, `64M`, `1GiB`",
                );
                None
            }
        }
    });
    let what = format!("target `{}`", name.value);
    let cloud = f.get("cloud").and_then(|n| string(n, d));
    if cloud.is_none() {
        for key in ["region", "env", "exists"] {
            if let Some(n) = f.get(key) {
                d.error(
                    n.span,
                    format!("`{key}` only applies to a cloud {what}"),
                    "add `cloud: <provider>`, or remove it",
                );
            }
        }
    }
    let kind = match (layout, registry, cloud) {
        (None, None, Some(provider)) => {
            for key in ["namespace", "insecure", "chunk_size"] {
                if let Some(n) = f.get(key) {
                    d.error(
                        n.span,
                        format!("`{key}` does not apply to a cloud {what}"),
                        "remove it",
                    );
                }
            }
            let region = f
                .required_string(
                    "region",
                    &what,
                    d,
                    "add the cloud region, e.g. `region: eu-west-2`",
                )
                .map(|s| s.value)
                .unwrap_or_default();
            let exists = f.get("exists").map(|n| match n.kind {
                NodeKind::Seq(_) => plain_strings(Some(n), d),
                _ => string(n, d).map(|s| vec![s.value]).unwrap_or_default(),
            });
            TargetKind::Cloud {
                provider: provider.value,
                region,
                env: f.get("env").map(|n| string_map(n, d)).unwrap_or_default(),
                exists: exists.filter(|e| !e.is_empty()),
            }
        }
        (Some(path), None, None) => {
            for key in ["namespace", "insecure", "chunk_size"] {
                if let Some(n) = f.get(key) {
                    d.error(
                        n.span,
                        format!("`{key}` does not apply to a layout {what}"),
                        "remove it, or make the target a `registry:`",
                    );
                }
            }
            TargetKind::Layout {
                path: PathBuf::from(path.value),
            }
        }
        (None, Some(reg), None) => TargetKind::Registry {
            registry: registry_host(&reg, insecure, d).unwrap_or_default(),
            namespace: namespace.map(|n| n.value.trim_matches('/').to_owned()),
            insecure,
            chunk_size,
        },
        (None, None, None) => {
            d.error(
                node.span,
                format!("{what} is neither a layout nor a registry"),
                "add `layout: ./path`, `registry: host[:port]` or `cloud: <provider>` with `region:`",
            );
            TargetKind::Layout {
                path: PathBuf::new(),
            }
        }
        _ => {
            d.error(
                node.span,
                format!("{what} sets more than one of `layout`, `registry` and `cloud`"),
                "a target is an OCI layout directory, a registry or a cloud region: keep one",
            );
            TargetKind::Layout {
                path: PathBuf::new(),
            }
        }
    };
    Some(Target {
        name,
        kind,
        span: node.span,
    })
}

/// `host[:port]`; an `http://` prefix is plain HTTP and needs `insecure: true`.
fn registry_host(reg: &Spanned<String>, insecure: bool, d: &mut Diagnostics) -> Option<String> {
    let raw = reg.value.trim_end_matches('/');
    let host = if let Some(rest) = raw.strip_prefix("http://") {
        if !insecure {
            d.error(
                reg.span,
                format!("registry `{raw}` is plain HTTP"),
                "plain HTTP is only allowed with `insecure: true` on this target; prefer TLS",
            );
        }
        rest
    } else {
        raw.strip_prefix("https://").unwrap_or(raw)
    };
    let valid = !host.is_empty()
        && !host.contains('/')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if !valid {
        d.error(
            reg.span,
            format!("`{raw}` is not a registry host"),
            "write `host` or `host:port` (the namespace goes in `namespace:`)",
        );
        return None;
    }
    Some(host.to_owned())
}

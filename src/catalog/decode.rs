//! Typed decoding of the YAML tree into the catalog model.
//!
//! Every problem is recorded with its location and decoding goes on, so one
//! run reports all of them. The key lists here are also what the JSON Schema
//! is checked against.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::diag::{Diagnostics, Span, suggestion};
use super::model::{
    Catalog, Checksum, Command, Compression, DEFAULT_LAYOUT, DEFAULT_MAX_DELETE, DEFAULT_TAGS,
    DEFAULT_TARGET, Defaults, Format, GitRetention, Image, Mmdebstrap, Os, Packer, Platform,
    PlatformSource, Retention, Source, Spanned, Target, TargetKind, Variable,
};
use super::yaml::{Node, NodeKind, plain_bool};

pub const TOP_KEYS: &[&str] = &[
    "version",
    "variables",
    "targets",
    "defaults",
    "images",
    "retention",
];
pub const VARIABLE_KEYS: &[&str] = &["default", "env"];
pub const TARGET_KEYS: &[&str] = &[
    "name",
    "layout",
    "registry",
    "namespace",
    "insecure",
    "chunk_size",
    "cloud",
    "region",
    "env",
    "exists",
];
pub const DEFAULTS_KEYS: &[&str] = &["tags", "prerelease_tags", "compression"];
pub const IMAGE_KEYS: &[&str] = &[
    "name",
    "os",
    "source",
    "platform",
    "platforms",
    "format",
    "kubernetes",
    "tags",
    "prerelease_tags",
    "compression",
    "targets",
];
pub const OS_KEYS: &[&str] = &["distro", "version"];
pub const PLATFORM_KEYS: &[&str] = &["platform", "source"];
pub const SOURCE_KEYS: &[&str] = &[
    "file",
    "url",
    "sha256",
    "checksums_url",
    "mmdebstrap",
    "packer",
    "command",
];
pub const MMDEBSTRAP_KEYS: &[&str] = &["suite", "variant", "packages", "components", "mirror"];
pub const PACKER_KEYS: &[&str] = &["template", "vars", "inputs", "artifact"];
pub const COMMAND_KEYS: &[&str] = &["run", "inputs", "artifact"];
pub const RETENTION_KEYS: &[&str] = &["keep_last", "max_age", "protect", "max_delete", "git"];
pub const GIT_KEYS: &[&str] = &["repo", "branches", "supported_releases", "paths"];

/// The catalog format version this build understands.
pub const CATALOG_VERSION: u64 = 1;

/// Decodes the root node. Returns `None` only when nothing useful could be read;
/// check the diagnostics for problems either way.
pub fn catalog(path: &Path, root: &Node, d: &mut Diagnostics) -> Option<Catalog> {
    let f = Fields::of(root, "the catalog", TOP_KEYS, d)?;
    let version = match f.get("version") {
        None => {
            d.error(
                root.span,
                "missing key `version`",
                "add `version: 1` at the top of the catalog",
            );
            CATALOG_VERSION
        }
        Some(n) => match uint(n, d) {
            Some(v) if v == CATALOG_VERSION => v,
            Some(v) => {
                d.error(
                    n.span,
                    format!("unsupported catalog version {v}"),
                    "this imagepipe reads `version: 1`",
                );
                v
            }
            None => CATALOG_VERSION,
        },
    };
    let variables = f
        .get("variables")
        .map(|n| variables(n, d))
        .unwrap_or_default();
    let mut targets = f
        .get("targets")
        .map(|n| list(n, d, target))
        .unwrap_or_default();
    if f.get("targets").is_none() {
        targets.push(Target {
            name: Spanned::new(DEFAULT_TARGET.to_owned(), root.span),
            kind: TargetKind::Layout {
                path: PathBuf::from(DEFAULT_LAYOUT),
            },
            span: root.span,
        });
    }
    let defaults = defaults(f.get("defaults"), d);
    let images = match f.get("images") {
        Some(n) => list(n, d, image),
        None => {
            d.error(
                root.span,
                "missing key `images`",
                "list the images to build under `images:`",
            );
            Vec::new()
        }
    };
    let retention = f.get("retention").and_then(|n| retention(n, d));
    Some(Catalog {
        path: path.to_path_buf(),
        version,
        variables,
        targets,
        defaults,
        images,
        retention,
    })
}

/// The entries of a mapping, checked against the keys allowed there.
struct Fields<'n> {
    entries: Vec<(&'n str, &'n Node)>,
    span: Span,
}

impl<'n> Fields<'n> {
    fn of(node: &'n Node, what: &str, allowed: &[&str], d: &mut Diagnostics) -> Option<Self> {
        let NodeKind::Map(entries) = &node.kind else {
            d.error(
                node.span,
                format!("{what} must be a mapping, found {}", node.describe()),
                "write `key: value` lines",
            );
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            match k.scalar() {
                Some(key) if allowed.contains(&key) => out.push((key, v)),
                Some(key) => d.error(
                    k.span,
                    format!("unknown key `{key}` in {what}"),
                    suggestion(key, allowed),
                ),
                None => d.error(
                    k.span,
                    format!("keys of {what} must be plain words"),
                    suggestion("", allowed),
                ),
            }
        }
        Some(Self {
            entries: out,
            span: node.span,
        })
    }

    fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    fn required(&self, key: &str, what: &str, d: &mut Diagnostics, help: &str) -> Option<&'n Node> {
        let found = self.get(key);
        if found.is_none() {
            d.error(self.span, format!("{what} is missing key `{key}`"), help);
        }
        found
    }
}

fn string(node: &Node, d: &mut Diagnostics) -> Option<Spanned<String>> {
    match &node.kind {
        NodeKind::Scalar { value, .. } if !node.is_null() => {
            Some(Spanned::new(value.clone(), node.span))
        }
        _ => {
            d.error(
                node.span,
                format!("expected a string, found {}", node.describe()),
                "write a single value, quoted if in doubt",
            );
            None
        }
    }
}

fn uint(node: &Node, d: &mut Diagnostics) -> Option<u64> {
    match &node.kind {
        NodeKind::Scalar {
            value,
            quoted: false,
        } => match value.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                d.error(
                    node.span,
                    format!("expected a whole number, found `{value}`"),
                    "write a number such as `3`",
                );
                None
            }
        },
        _ => {
            d.error(
                node.span,
                format!("expected a whole number, found {}", node.describe()),
                "write a number such as `3`, without quotes",
            );
            None
        }
    }
}

fn boolean(node: &Node, d: &mut Diagnostics) -> Option<bool> {
    match &node.kind {
        NodeKind::Scalar {
            value,
            quoted: false,
        } if plain_bool(value).is_some() => plain_bool(value),
        _ => {
            d.error(
                node.span,
                "expected `true` or `false`",
                "write `true` or `false` without quotes",
            );
            None
        }
    }
}

fn list<T>(
    node: &Node,
    d: &mut Diagnostics,
    mut item: impl FnMut(&Node, &mut Diagnostics) -> Option<T>,
) -> Vec<T> {
    match &node.kind {
        NodeKind::Seq(items) => items.iter().filter_map(|n| item(n, d)).collect(),
        _ => {
            d.error(
                node.span,
                format!("expected a list, found {}", node.describe()),
                "write one `- item` per line, or `[a, b]`",
            );
            Vec::new()
        }
    }
}

fn strings(node: &Node, d: &mut Diagnostics) -> Vec<Spanned<String>> {
    list(node, d, string)
}

fn plain_strings(node: Option<&Node>, d: &mut Diagnostics) -> Vec<String> {
    node.map(|n| strings(n, d).into_iter().map(|s| s.value).collect())
        .unwrap_or_default()
}

fn variables(node: &Node, d: &mut Diagnostics) -> Vec<Variable> {
    let NodeKind::Map(entries) = &node.kind else {
        d.error(
            node.span,
            "`variables` must be a mapping of name to `{ default, env }`",
            "write `runc: { default: \"1.2.6\", env: RUNC_VERSION }`",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in entries {
        let Some(name) = string(k, d) else { continue };
        // Shorthand: `runc: "1.2.6"` is a default without an override.
        if let NodeKind::Scalar { .. } = v.kind {
            if let Some(default) = string(v, d) {
                out.push(Variable {
                    name,
                    default: default.value,
                    env: None,
                });
            }
            continue;
        }
        let Some(f) = Fields::of(v, &format!("variable `{}`", name.value), VARIABLE_KEYS, d) else {
            continue;
        };
        let default = f
            .required(
                "default",
                &format!("variable `{}`", name.value),
                d,
                "give the pinned value, e.g. `default: \"1.2.6\"`",
            )
            .and_then(|n| string(n, d));
        let env = f.get("env").and_then(|n| string(n, d)).map(|s| s.value);
        if let Some(default) = default {
            out.push(Variable {
                name,
                default: default.value,
                env,
            });
        }
    }
    out
}

fn target(node: &Node, d: &mut Diagnostics) -> Option<Target> {
    let f = Fields::of(node, "a target", TARGET_KEYS, d)?;
    let name = f
        .required("name", "a target", d, "give the target a `name:`")
        .and_then(|n| string(n, d))?;
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
                .required(
                    "region",
                    &what,
                    d,
                    "add the cloud region, e.g. `region: eu-west-2`",
                )
                .and_then(|n| string(n, d))
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

fn compression(node: &Node, d: &mut Diagnostics) -> Option<Compression> {
    let s = string(node, d)?;
    let (algo, level) = match s.value.split_once(':') {
        Some((a, l)) => (a, Some(l)),
        None => (s.value.as_str(), None),
    };
    let bad_level = |d: &mut Diagnostics, range: &str| {
        d.error(
            s.span,
            format!("bad compression level in `{}`", s.value),
            format!(
                "use a level in {range}, e.g. `{algo}:{}`",
                if algo == "gzip" { 6 } else { 3 }
            ),
        );
    };
    match algo {
        "none" if level.is_none() => Some(Compression::None),
        "gzip" => match level.map(str::parse::<u32>) {
            None => Some(Compression::Gzip {
                level: Compression::DEFAULT_GZIP_LEVEL,
            }),
            Some(Ok(l)) if (1..=9).contains(&l) => Some(Compression::Gzip { level: l }),
            Some(_) => {
                bad_level(d, "1..=9");
                None
            }
        },
        "zstd" => match level.map(str::parse::<i32>) {
            None => Some(Compression::Zstd {
                level: Compression::DEFAULT_ZSTD_LEVEL,
            }),
            Some(Ok(l)) if (1..=19).contains(&l) => Some(Compression::Zstd { level: l }),
            Some(_) => {
                bad_level(d, "1..=19");
                None
            }
        },
        other => {
            d.error(
                s.span,
                format!("unknown compression `{other}`"),
                format!(
                    "{} (optionally with a level: `zstd:3`)",
                    suggestion(other, Compression::NAMES)
                ),
            );
            None
        }
    }
}

fn defaults(node: Option<&Node>, d: &mut Diagnostics) -> Defaults {
    let mut out = Defaults {
        tags: DEFAULT_TAGS
            .iter()
            .map(|t| Spanned::new((*t).to_owned(), Span::default()))
            .collect(),
        prerelease_tags: Vec::new(),
        compression: Compression::Gzip {
            level: Compression::DEFAULT_GZIP_LEVEL,
        },
    };
    let Some(f) = node.and_then(|n| Fields::of(n, "`defaults`", DEFAULTS_KEYS, d)) else {
        return out;
    };
    if let Some(n) = f.get("tags") {
        out.tags = tag_list(n, d);
    }
    if let Some(n) = f.get("prerelease_tags") {
        out.prerelease_tags = strings(n, d);
    }
    if let Some(c) = f.get("compression").and_then(|n| compression(n, d)) {
        out.compression = c;
    }
    out
}

fn tag_list(node: &Node, d: &mut Diagnostics) -> Vec<Spanned<String>> {
    let tags = strings(node, d);
    if tags.is_empty() && matches!(node.kind, NodeKind::Seq(_)) {
        d.error(
            node.span,
            "the tag list is empty",
            "give at least the immutable tag, e.g. `[\"{name}-{hash}\"]`",
        );
    }
    tags
}

fn image(node: &Node, d: &mut Diagnostics) -> Option<Image> {
    let f = Fields::of(node, "an image", IMAGE_KEYS, d)?;
    let name = f
        .required(
            "name",
            "an image",
            d,
            "give the image a `name:` (its repository name)",
        )
        .and_then(|n| string(n, d))?;
    let what = format!("image `{}`", name.value);
    let os = f
        .required(
            "os",
            &what,
            d,
            "add `os: { distro: ubuntu, version: \"24.04\" }`",
        )
        .and_then(|n| Fields::of(n, "`os`", OS_KEYS, d))
        .and_then(|o| {
            let distro = o
                .required(
                    "distro",
                    "`os`",
                    d,
                    "add `distro: ubuntu` (or debian, flatcar, ...)",
                )
                .and_then(|n| string(n, d));
            let version = o
                .required("version", "`os`", d, "add `version: \"24.04\"`")
                .and_then(|n| string(n, d));
            Some(Os {
                distro: distro?.value,
                version: version?.value,
            })
        });
    // Decoding goes on after a bad field, with a stand-in value, so that the
    // checks of the other fields still run and every problem is reported.
    let platforms = match (f.get("source"), f.get("platforms")) {
        (Some(src), None) => {
            let platform = f
                .get("platform")
                .and_then(|p| platform(p, d))
                .unwrap_or_else(Platform::amd64);
            source(src, d)
                .map(|source| PlatformSource {
                    platform,
                    source,
                    span: src.span,
                })
                .into_iter()
                .collect()
        }
        (None, Some(list_node)) => {
            if let Some(p) = f.get("platform") {
                d.error(
                    p.span,
                    "`platform` goes inside each entry of `platforms`",
                    "move it into the `platforms:` entries",
                );
            }
            let items = list(list_node, d, |n, d| {
                let pf = Fields::of(n, "a `platforms` entry", PLATFORM_KEYS, d)?;
                let p = pf
                    .required(
                        "platform",
                        "a `platforms` entry",
                        d,
                        "add `platform: linux/arm64`",
                    )
                    .and_then(|p| platform(p, d));
                let s = pf
                    .required(
                        "source",
                        "a `platforms` entry",
                        d,
                        "add the `source:` for this platform",
                    )
                    .and_then(|s| source(s, d));
                Some(PlatformSource {
                    platform: p?,
                    source: s?,
                    span: n.span,
                })
            });
            if items.is_empty() && matches!(list_node.kind, NodeKind::Seq(ref v) if v.is_empty()) {
                d.error(
                    list_node.span,
                    "`platforms` is empty",
                    "list at least one `{ platform, source }`",
                );
            }
            items
        }
        (Some(src), Some(_)) => {
            d.error(
                src.span,
                format!("{what} sets both `source` and `platforms`"),
                "use `source` for one platform, or `platforms` with a source per platform",
            );
            Vec::new()
        }
        (None, None) => {
            d.error(
                node.span,
                format!("{what} has no `source`"),
                "add `source:` with one of: file, url + sha256, mmdebstrap, packer, command",
            );
            Vec::new()
        }
    };
    let format = f
        .required(
            "format",
            &what,
            d,
            "add `format: containerdisk` (or rootfs, artifact)",
        )
        .and_then(|n| {
            let s = string(n, d)?;

            match s.value.as_str() {
                "containerdisk" => Some(Format::ContainerDisk),
                "rootfs" => Some(Format::Rootfs),
                "artifact" => Some(Format::Artifact),
                "machine-image" => Some(Format::MachineImage),
                other => {
                    d.error(
                        s.span,
                        format!("unknown format `{other}`"),
                        suggestion(other, Format::NAMES),
                    );
                    None
                }
            }
        });
    let kubernetes = f
        .get("kubernetes")
        .and_then(|n| boolean(n, d))
        .unwrap_or(false);
    let tags = f.get("tags").map(|n| tag_list(n, d));
    let prerelease_tags = f.get("prerelease_tags").map(|n| strings(n, d));
    let compression = f.get("compression").and_then(|n| compression(n, d));
    let targets = f.get("targets").map(|n| strings(n, d));
    let os = os.unwrap_or(Os {
        distro: String::new(),
        version: String::new(),
    });
    let format = format.unwrap_or(Format::ContainerDisk);
    Some(Image {
        name,
        os,
        platforms,
        format,
        kubernetes,
        tags,
        prerelease_tags,
        compression,
        targets,
        span: node.span,
    })
}

fn platform(node: &Node, d: &mut Diagnostics) -> Option<Platform> {
    let s = string(node, d)?;
    let parsed = Platform::parse(&s.value);
    if parsed.is_none() {
        d.error(
            s.span,
            format!("`{}` is not a platform", s.value),
            "write `os/arch[/variant]`, e.g. `linux/amd64` or `linux/arm64`",
        );
    }
    parsed
}

fn source(node: &Node, d: &mut Diagnostics) -> Option<Source> {
    let f = Fields::of(node, "`source`", SOURCE_KEYS, d)?;
    let kinds: Vec<&str> = Source::KINDS
        .iter()
        .copied()
        .filter(|k| f.get(k).is_some())
        .collect();
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => {
            d.error(
                node.span,
                "`source` names no source",
                "use one of: file, url (+ sha256 or checksums_url), mmdebstrap, packer, command",
            );
            return None;
        }
        many => {
            d.error(
                node.span,
                format!("`source` sets several sources: {}", many.join(", ")),
                "keep exactly one; use `platforms:` for one source per architecture",
            );
            return None;
        }
    };
    if kind != "url" {
        for key in ["sha256", "checksums_url"] {
            if let Some(n) = f.get(key) {
                d.error(
                    n.span,
                    format!("`{key}` only applies to `url` sources"),
                    "remove it",
                );
            }
        }
    }
    let sub = |key| f.get(key).expect("kind present");
    match kind {
        "file" => string(sub("file"), d).map(|p| Source::File {
            path: PathBuf::from(p.value),
        }),
        "url" => {
            let url = string(sub("url"), d)?;
            if !(url.value.starts_with("https://") || url.value.starts_with("http://")) {
                d.error(
                    url.span,
                    format!("`{}` is not an http(s) URL", url.value),
                    "give the full `https://` address of the image",
                );
            }
            let checksum = match (f.get("sha256"), f.get("checksums_url")) {
                (Some(s), None) => sha256(s, d).map(Checksum::Sha256),
                (None, Some(u)) => string(u, d).map(|u| Checksum::SumsUrl(u.value)),
                (Some(s), Some(_)) => {
                    d.error(
                        s.span,
                        "set either `sha256` or `checksums_url`, not both",
                        "keep the pinned `sha256`",
                    );
                    None
                }
                (None, None) => {
                    d.error(url.span, "a `url` source needs a checksum", "add `sha256: <64 hex>` (or `checksums_url:` pointing at the upstream SHA256SUMS file)");
                    None
                }
            };
            Some(Source::Url {
                url: url.value,
                checksum: checksum?,
            })
        }
        "mmdebstrap" => {
            let n = sub("mmdebstrap");
            let m = Fields::of(n, "`mmdebstrap`", MMDEBSTRAP_KEYS, d)?;
            let suite = m
                .required("suite", "`mmdebstrap`", d, "add `suite: bookworm`")
                .and_then(|n| string(n, d))?;
            Some(Source::Mmdebstrap(Mmdebstrap {
                suite: suite.value,
                variant: m
                    .get("variant")
                    .and_then(|n| string(n, d))
                    .map_or_else(|| "minbase".to_owned(), |s| s.value),
                packages: plain_strings(m.get("packages"), d),
                components: plain_strings(m.get("components"), d),
                mirror: m.get("mirror").and_then(|n| string(n, d)).map(|s| s.value),
            }))
        }
        "packer" => {
            let n = sub("packer");
            let p = Fields::of(n, "`packer`", PACKER_KEYS, d)?;
            let template = p
                .required(
                    "template",
                    "`packer`",
                    d,
                    "add `template: packer/ubuntu-2404.pkr.hcl`",
                )
                .and_then(|n| string(n, d))?;
            let vars = p.get("vars").map(|n| string_map(n, d)).unwrap_or_default();
            Some(Source::Packer(Packer {
                template: PathBuf::from(template.value),
                vars,
                inputs: plain_strings(p.get("inputs"), d),
                artifact: p
                    .get("artifact")
                    .and_then(|n| string(n, d))
                    .map(|s| s.value),
            }))
        }
        "command" => {
            let n = sub("command");
            let c = Fields::of(n, "`command`", COMMAND_KEYS, d)?;
            let run_node = c.required("run", "`command`", d, "add `run: [./build-disk.sh]`")?;
            let run = match run_node.kind {
                NodeKind::Seq(_) => plain_strings(Some(run_node), d),
                _ => string(run_node, d)
                    .map(|s| vec![s.value])
                    .unwrap_or_default(),
            };
            if run.is_empty() {
                d.error(
                    run_node.span,
                    "`run` is empty",
                    "give the program to run and its arguments",
                );
                return None;
            }
            Some(Source::Command(Command {
                run,
                inputs: plain_strings(c.get("inputs"), d),
                artifact: c
                    .get("artifact")
                    .and_then(|n| string(n, d))
                    .map(|s| s.value),
            }))
        }
        _ => None,
    }
}

fn sha256(node: &Node, d: &mut Diagnostics) -> Option<String> {
    let s = string(node, d)?;
    let hex = s
        .value
        .strip_prefix("sha256:")
        .unwrap_or(&s.value)
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(hex)
    } else {
        d.error(
            s.span,
            "`sha256` must be 64 hexadecimal characters",
            "copy the checksum from the upstream SHA256SUMS file",
        );
        None
    }
}

fn string_map(node: &Node, d: &mut Diagnostics) -> Vec<(String, String)> {
    let NodeKind::Map(entries) = &node.kind else {
        d.error(
            node.span,
            format!("expected a mapping, found {}", node.describe()),
            "write `name: value` lines",
        );
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(k, v)| Some((string(k, d)?.value, string(v, d)?.value)))
        .collect()
}

fn retention(node: &Node, d: &mut Diagnostics) -> Option<Retention> {
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

/// The smallest upload chunk: ECR refuses parts under 5 MiB.
pub const MIN_CHUNK: u64 = 5 << 20;

/// Parses `16MiB`, `64M`, `1GiB`, `5242880` (binary units; `B` optional).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().ok()?;
    let unit = match t[digits..]
        .trim()
        .trim_end_matches('B')
        .trim_end_matches('i')
    {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" | "m" => 1 << 20,
        "G" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// Parses `30d`, `12h`, `2w`, `90m`, `45s` and combinations such as `1d12h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    let mut saw_unit = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return None,
        };
        let n: u64 = digits.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        digits.clear();
        saw_unit = true;
    }
    (saw_unit && digits.is_empty()).then(|| Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("5 MB"), Some(5 << 20));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3T"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("30d"),
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            parse_duration("1d12h"),
            Some(Duration::from_secs(36 * 3600))
        );
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("30x"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("d"), None);
    }
}

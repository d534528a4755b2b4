//! `source:`: file, url + checksum, mmdebstrap, packer, command.

use super::*;
use crate::catalog::{FileDigest, HashAlgorithm};

pub(super) fn source(node: &Node, d: &mut Diagnostics) -> Option<Source> {
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
        for key in ["sha256", "sha512", "checksums_url", "size"] {
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
            let pinned: Vec<(HashAlgorithm, &Node)> = HashAlgorithm::ALL
                .into_iter()
                .filter_map(|a| f.get(a.name()).map(|n| (a, n)))
                .collect();
            let checksum = match (pinned.as_slice(), f.get("checksums_url")) {
                ([(a, n)], None) => file_digest(*a, n, d).map(Checksum::Pinned),
                ([], Some(u)) => string(u, d).map(|u| Checksum::SumsUrl(u.value)),
                ([], None) => {
                    d.error(url.span, "a `url` source needs a checksum", "add `sha256: <64 hex>` or `sha512: <128 hex>` (or `checksums_url:` pointing at the upstream SHA256SUMS/SHA512SUMS file)");
                    None
                }
                ([(_, n), ..], _) => {
                    d.error(
                        n.span,
                        "set one of `sha256`, `sha512` and `checksums_url`",
                        "keep the pinned checksum upstream publishes",
                    );
                    None
                }
            };
            let size = f.get("size").and_then(|n| {
                let s = string(n, d)?;
                let v = super::parse_size(&s.value).filter(|v| *v > 0);
                if v.is_none() {
                    d.error(
                        s.span,
                        format!("`{}` is not a size", s.value),
                        "write the file's size in bytes, or with a unit: `652738560`, `623MiB`",
                    );
                }
                v
            });
            Some(Source::Url {
                url: url.value,
                checksum: checksum?,
                size,
            })
        }
        "mmdebstrap" => {
            let n = sub("mmdebstrap");
            let m = Fields::of(n, "`mmdebstrap`", MMDEBSTRAP_KEYS, d)?;
            let suite = m.required_string("suite", "`mmdebstrap`", d, "add `suite: bookworm`")?;
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
            let template = p.required_string(
                "template",
                "`packer`",
                d,
                "add `template: packer/ubuntu-2404.pkr.hcl`",
            )?;
            let vars = p.get("vars").map(|n| string_map(n, d)).unwrap_or_default();
            let mut vars_names: Vec<String> = vars.iter().map(|(k, _)| k.clone()).collect();
            if let Some(n) = p.get("name_var").and_then(|n| match &n.kind {
                NodeKind::Scalar { value, .. } => Some(value.clone()),
                _ => None,
            }) {
                vars_names.push(n);
            }
            Some(Source::Packer(Packer {
                template: PathBuf::from(template.value),
                vars,
                inputs: plain_strings(p.get("inputs"), d),
                artifact: p
                    .get("artifact")
                    .and_then(|n| string(n, d))
                    .map(|s| s.value),
                var_files: plain_strings(p.get("var_files"), d)
                    .into_iter()
                    .map(PathBuf::from)
                    .collect(),
                working_dir: p.get("working_dir").and_then(|n| {
                    let s = string(n, d)?;
                    if s.value.starts_with('/') {
                        d.error(
                            s.span,
                            format!("`working_dir: {}` is absolute", s.value),
                            "give it relative to the catalog's directory, e.g. `image-builder/images/capi`",
                        );
                        return None;
                    }
                    // `.`, `./` and `a/b/` name what `` and `a/b` do: one recipe.
                    let clean: PathBuf = std::path::Path::new(&s.value)
                        .components()
                        .filter(|c| !matches!(c, std::path::Component::CurDir))
                        .collect();
                    (!clean.as_os_str().is_empty()).then_some(clean)
                }),
                name_var: p.get("name_var").and_then(|n| {
                    let s = string(n, d)?;
                    if !is_packer_var(&s.value) {
                        d.error(
                            s.span,
                            format!("`{}` is not a Packer variable name", s.value),
                            "use letters, digits and `_`, e.g. `omi_name`",
                        );
                        return None;
                    }
                    Some(s.value)
                }),
                runtime_vars: p
                    .get("runtime_vars")
                    .map(|n| runtime_vars(n, d, &vars_names))
                    .unwrap_or_default(),
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

/// The `sha256`/`sha512` value under key `key` (its own `<algo>:` prefix allowed).
fn file_digest(key: HashAlgorithm, node: &Node, d: &mut Diagnostics) -> Option<FileDigest> {
    let s = string(node, d)?;
    let (prefix, hex) = match s.value.split_once(':') {
        Some((p, h)) => (Some(p.to_ascii_lowercase()), h.trim()),
        None => (None, s.value.trim()),
    };
    let hex = hex.to_ascii_lowercase();
    let k = key.name();
    if let Some(p) = prefix.as_deref().filter(|p| *p != k) {
        let fix = HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == p)
            .map_or_else(
                || format!("write the {k} the upstream checksum file lists"),
                |a| format!("write it under `{}:` instead", a.name()),
            );
        d.error(s.span, format!("`{k}` holds a `{p}:` checksum"), fix);
        return None;
    }
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        d.error(
            s.span,
            format!("`{k}` must be hexadecimal"),
            format!(
                "copy the checksum from the upstream {}SUMS file",
                k.to_ascii_uppercase()
            ),
        );
        return None;
    }
    if hex.len() != key.hex_len() {
        let fix = match HashAlgorithm::of_hex_len(hex.len()) {
            Some(a) => format!(
                "{} hex characters is a {} checksum: write it under `{}:`",
                hex.len(),
                a.name(),
                a.name()
            ),
            None => format!(
                "copy all {} characters from the upstream checksum file",
                key.hex_len()
            ),
        };
        d.error(
            s.span,
            format!(
                "`{k}` must be {} hexadecimal characters, not {}",
                key.hex_len(),
                hex.len()
            ),
            fix,
        );
        return None;
    }
    Some(FileDigest {
        algorithm: key,
        hex,
    })
}

/// The Packer variables imagepipe sets itself.
const RESERVED_PACKER_VARS: &[&str] = &[
    "kubernetes_semver",
    "kubernetes_series",
    "kubernetes_deb_version",
    "runc_version",
    "containerd_version",
    "image_name",
    "image_tag",
    "region",
    "output_directory",
];

fn is_packer_var(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `runtime_vars: { ssh_source_cidr: SSH_SOURCE_CIDR }`: Packer variable →
/// the environment variable its value comes from.
fn runtime_vars(node: &Node, d: &mut Diagnostics, set: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in string_map(node, d) {
        if RESERVED_PACKER_VARS.contains(&k.as_str()) || set.contains(&k) {
            d.error(
                node.span,
                format!("`{k}` is set by imagepipe or by `vars`/`name_var`: a runtime variable cannot change it"),
                "runtime_vars are for values that do not change what is built, such as `ssh_source_cidr`",
            );
            continue;
        }
        let env_ok = v.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !is_packer_var(&k) || !env_ok {
            d.error(
                node.span,
                format!("`{k}: {v}` is not a Packer variable and an environment variable"),
                "write `ssh_source_cidr: SSH_SOURCE_CIDR`: the value is the name of the environment variable to read",
            );
            continue;
        }
        out.push((k, v));
    }
    out
}

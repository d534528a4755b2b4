//! `source:`: file, url + checksum, mmdebstrap, packer, command.

use super::*;

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
        for key in ["sha256", "checksums_url", "size"] {
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

//! `defaults:` and `images:`: names, tags, formats, compression, platforms.

use super::*;

pub(super) fn compression(node: &Node, d: &mut Diagnostics) -> Option<Compression> {
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

pub(super) fn defaults(node: Option<&Node>, d: &mut Diagnostics) -> Defaults {
    let mut out = Defaults {
        tags: DEFAULT_TAGS
            .iter()
            .map(|t| Spanned::new((*t).to_owned(), Span::default()))
            .collect(),
        prerelease_tags: Vec::new(),
        compression: Compression::Gzip {
            level: Compression::DEFAULT_GZIP_LEVEL,
        },
        verify: None,
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
    out.verify = f.get("verify").and_then(|n| verify(n, d));
    out
}

/// `verify:` of an image or of `defaults`.
fn verify(node: &Node, d: &mut Diagnostics) -> Option<Verify> {
    let f = Fields::of(node, "`verify`", VERIFY_KEYS, d)?;
    let required = f
        .get("required")
        .and_then(|n| boolean(n, d))
        .unwrap_or(false);
    let timeout = f
        .get("timeout")
        .and_then(|n| {
            let s = string(n, d)?;
            let parsed = parse_duration(&s.value).filter(|t| !t.is_zero());
            if parsed.is_none() {
                d.error(
                    s.span,
                    format!("`{}` is not a duration", s.value),
                    "write e.g. `3m`, `90s` or `1h` (the time under KVM; TCG gets five times as long)",
                );
            }
            parsed
        })
        .unwrap_or(DEFAULT_VERIFY_TIMEOUT);
    let memory_mib = f
        .get("memory")
        .and_then(|n| {
            let s = string(n, d)?;
            // A bare number is MiB, as QEMU's `-m` reads it.
            let parsed = if s.value.bytes().all(|b| b.is_ascii_digit()) {
                s.value.parse::<u64>().ok()
            } else {
                parse_size(&s.value).map(|b| b >> 20)
            }
            .filter(|m| (256..=65536).contains(m));
            if parsed.is_none() {
                d.error(
                    s.span,
                    format!("`{}` is not a guest memory size", s.value),
                    "write a size between 256MiB and 64GiB, e.g. `1GiB` or `2048MiB`",
                );
            }
            parsed
        })
        .unwrap_or(DEFAULT_VERIFY_MEMORY_MIB);
    let firmware = f
        .get("firmware")
        .and_then(|n| {
            let s = string(n, d)?;
            match s.value.as_str() {
                "bios" => Some(Firmware::Bios),
                "uefi" => Some(Firmware::Uefi),
                other => {
                    d.error(
                        s.span,
                        format!("unknown firmware `{other}`"),
                        suggestion(other, &["bios", "uefi"]),
                    );
                    None
                }
            }
        })
        .unwrap_or(Firmware::Bios);
    let checks = f
        .get("checks")
        .map(|n| {
            list(n, d, |c, d| {
                let cf = Fields::of(c, "a check", CHECK_KEYS, d)?;
                let run = cf.required_string(
                    "run",
                    "a check",
                    d,
                    "add the command to run in the guest, e.g. `run: kubeadm version -o short`",
                )?;
                Some(Check {
                    run: run.value,
                    expect: cf.get("expect").and_then(|n| string(n, d)),
                })
            })
        })
        .unwrap_or_default();
    Some(Verify {
        required,
        timeout,
        memory_mib,
        firmware,
        checks,
    })
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

pub(super) fn image(node: &Node, d: &mut Diagnostics) -> Option<Image> {
    let f = Fields::of(node, "an image", IMAGE_KEYS, d)?;
    let name = f.required_string(
        "name",
        "an image",
        d,
        "give the image a `name:` (its repository name)",
    )?;
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
            let distro = o.required_string(
                "distro",
                "`os`",
                d,
                "add `distro: ubuntu` (or debian, flatcar, ...)",
            );
            let version = o.required_string("version", "`os`", d, "add `version: \"24.04\"`");
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
    let config = f.get("config").and_then(|n| runtime_config(n, d));
    let verify = f.get("verify").and_then(|n| verify(n, d));
    let labels = f.get("labels").map(|n| labels(n, d)).unwrap_or_default();
    let disk = f.get("disk").and_then(|n| disk_change(n, d));
    let os = os.unwrap_or(Os {
        distro: String::new(),
        version: String::new(),
    });
    let format = format.unwrap_or(Format::ContainerDisk);
    if let (Some(n), false) = (f.get("config"), format == Format::Rootfs) {
        d.error(
            n.span,
            format!("`config` only applies to a `format: rootfs` {what}"),
            "remove it: containerdisks, artifacts and machine images are not run as containers",
        );
    }
    if let (Some(n), Format::Rootfs | Format::MachineImage) = (f.get("verify"), format) {
        d.error(
            n.span,
            format!("`verify` boots disk images; {what} is not one"),
            "verification applies to `format: containerdisk` and `format: artifact` images: remove it",
        );
    }
    if let (Some(n), Format::Rootfs | Format::MachineImage) = (f.get("disk"), format) {
        d.error(
            n.span,
            format!("`disk` converts and grows disk images; {what} is not one"),
            "`disk:` applies to `format: containerdisk` and `format: artifact` images: remove it",
        );
    }
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
        config,
        verify,
        labels,
        disk,
        span: node.span,
    })
}

/// `disk:` — `format: qcow2 | raw` and `resize: "+8G" | "20G"`.
fn disk_change(node: &Node, d: &mut Diagnostics) -> Option<DiskChange> {
    let f = Fields::of(node, "`disk`", DISK_KEYS, d)?;
    let format = f.get("format").and_then(|n| {
        let s = string(n, d)?;
        match s.value.as_str() {
            "qcow2" => Some(DiskFormat::Qcow2),
            "raw" => Some(DiskFormat::Raw),
            other => {
                d.error(
                    s.span,
                    format!("unknown disk format `{other}`"),
                    suggestion(other, DiskFormat::NAMES),
                );
                None
            }
        }
    });
    let resize = f.get("resize").and_then(|n| {
        let s = string(n, d)?;
        let (grow, size) = match s.value.trim().strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, s.value.trim()),
        };
        let bytes = parse_size(size).filter(|b| *b > 0 && *b % 512 == 0);
        let limit = crate::builder::qcow2::MAX_VIRTUAL_SIZE;
        match bytes {
            Some(b) if b > limit => {
                d.error(
                    s.span,
                    format!("`resize: {}` is over the 16 TiB imagepipe writes", s.value),
                    "choose a smaller size",
                );
                None
            }
            Some(b) if grow => Some(Resize::Grow(b)),
            Some(b) => Some(Resize::To(b)),
            None => {
                let hint = if s.value.trim().starts_with('-') {
                    "a disk only grows (shrinking would cut the guest's file systems): write `+8G` to add 8 GiB, or `20G` for a size"
                } else {
                    "write `+8G` to add 8 GiB, or `20G` for a size (K, M, G, T are powers of 1024; a whole number of 512-byte sectors)"
                };
                d.error(
                    s.span,
                    format!("`{}` is not a disk size", s.value),
                    hint,
                );
                None
            }
        }
    });
    if format.is_none()
        && resize.is_none()
        && f.get("format").is_none()
        && f.get("resize").is_none()
    {
        d.error(
            node.span,
            "`disk` sets neither `format` nor `resize`".to_owned(),
            "add `format: qcow2` or `resize: +8G`, or remove `disk`",
        );
    }
    Some(DiskChange { format, resize })
}

/// Annotation keys imagepipe writes itself.
const RESERVED_LABELS: &[&str] = &[
    "io.imagepipe.",
    "org.opencontainers.image.created",
    "org.opencontainers.image.ref.name",
    "org.opencontainers.image.version",
];

/// `labels:`: keys as OCI annotation keys are written (reverse domain
/// notation: `org.opencontainers.image.authors`), values strings.
fn labels(node: &Node, d: &mut Diagnostics) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let NodeKind::Map(entries) = &node.kind else {
        d.error(
            node.span,
            format!("`labels` must be a mapping, found {}", node.describe()),
            "write `org.opencontainers.image.authors: \"Kubespray maintainers\"` lines",
        );
        return out;
    };
    for (k, v) in entries {
        let Some(key) = string(k, d) else { continue };
        let valid = key.value.len() <= 256
            && key.value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && key
                .value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !valid {
            d.error(
                k.span,
                format!("label key `{}` is not an annotation key", key.value),
                "use letters, digits, `.`, `-`, `_` and `/`, in reverse domain notation: `org.opencontainers.image.authors`, `io.kubespray.ci`",
            );
            continue;
        }
        if let Some(r) = RESERVED_LABELS.iter().find(|r| key.value.starts_with(**r)) {
            d.error(
                k.span,
                format!("label key `{}` is written by imagepipe (`{r}`)", key.value),
                "choose a key of your own domain",
            );
            continue;
        }
        let value = match &v.kind {
            NodeKind::Scalar { value, .. } => value.clone(),
            _ => {
                d.error(
                    v.span,
                    format!(
                        "label `{}` must be a string, found {}",
                        key.value,
                        v.describe()
                    ),
                    "quote the value",
                );
                continue;
            }
        };
        out.insert(key.value, value);
    }
    out
}

fn runtime_config(node: &Node, d: &mut Diagnostics) -> Option<RuntimeConfig> {
    let f = Fields::of(node, "`config`", CONFIG_KEYS, d)?;
    let env = f.get("env").map(|n| string_map(n, d)).unwrap_or_default();
    for (name, _) in &env {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            d.error(
                f.get("env").map_or(node.span, |n| n.span),
                format!("`{name}` is not an environment variable name"),
                "use letters, digits and `_`, not starting with a digit, e.g. `PATH`",
            );
        }
    }
    // Lists only: a string would leave open whether a shell splits it.
    let entrypoint = f.get("entrypoint").map(|n| plain_strings(Some(n), d));
    let cmd = f.get("cmd").map(|n| plain_strings(Some(n), d));
    Some(RuntimeConfig {
        env,
        entrypoint,
        cmd,
        working_dir: f
            .get("working_dir")
            .and_then(|n| string(n, d))
            .map(|s| s.value),
        user: f.get("user").and_then(|n| string(n, d)).map(|s| s.value),
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

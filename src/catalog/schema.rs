//! The JSON Schema of the catalog (`imagepipe schema`), for editors and CI.
//!
//! Written next to the decoder's key lists; a test checks that every object
//! here allows exactly the keys the decoder accepts.

use serde_json::{Map, Value, json};

use super::decode;
use super::model::{Compression, Format};

fn object(description: &str, props: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "description": description,
        "properties": props,
        "required": required,
        "additionalProperties": false,
    })
}

fn string(description: &str) -> Value {
    json!({ "type": "string", "description": description })
}

fn strings(description: &str) -> Value {
    json!({ "type": "array", "items": { "type": "string" }, "description": description })
}

fn inputs() -> Value {
    strings("Files or globs (relative to the catalog) whose contents are part of the recipe hash.")
}

fn source() -> Value {
    let mut props = Map::new();
    props.insert("file".into(), string("A local disk image (qcow2/raw), rootfs tarball or rootfs directory, relative to the catalog."));
    props.insert("url".into(), json!({ "type": "string", "pattern": "^https?://", "description": "Download address; `.xz`/`.gz` files are decompressed." }));
    props.insert("sha256".into(), json!({ "type": "string", "pattern": "^(sha256:)?[0-9a-fA-F]{64}$", "description": "SHA-256 of the downloaded file." }));
    props.insert("sha512".into(), json!({ "type": "string", "pattern": "^(sha512:)?[0-9a-fA-F]{128}$", "description": "SHA-512 of the downloaded file (Debian, Flatcar publish these)." }));
    props.insert("size".into(), json!({ "type": ["string", "integer"], "description": "Size of the downloaded file (bytes, or with a unit: `623MiB`): a longer body is cut off and refused. Default cap 64 GiB." }));
    props.insert(
        "checksums_url".into(),
        string("Upstream SHA256SUMS file (GNU or BSD format) listing the url's file."),
    );
    props.insert(
        "mmdebstrap".into(),
        object(
            "A Debian/Ubuntu rootfs built by mmdebstrap.",
            json!({
                "suite": string("Suite or codename, e.g. `bookworm`."),
                "variant": string("mmdebstrap variant (default `minbase`)."),
                "packages": strings("Extra packages to install."),
                "components": strings("Archive components, e.g. `main`, `contrib`."),
                "mirror": string("Mirror URL; a snapshot.debian.org timestamp URL pins the recipe."),
            }),
            &["suite"],
        ),
    );
    props.insert(
        "packer".into(),
        object(
            "A Packer build producing a disk image.",
            json!({
                "template": string("Packer template (JSON or HCL), relative to the catalog."),
                "vars": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra Packer variables; values may use placeholders." },
                "inputs": inputs(),
                "artifact": string("Glob for the artifact when the manifest post-processor is not used."),
                "var_files": { "type": "array", "items": { "type": "string" }, "description": "Packer var files (relative to `working_dir`, else the catalog), applied in order before imagepipe's generated one; their contents are part of the recipe." },
                "working_dir": { "type": "string", "description": "Packer's working directory, relative to the catalog (image-builder's `images/capi`); template, var_files, inputs and artifact resolve from it." },
                "name_var": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "description": "Machine images: the Packer variable that receives the image name (`omi_name`); default `image_name`." },
                "runtime_vars": { "type": "object", "additionalProperties": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }, "description": "Packer variable → environment variable it is read from at build time; not part of the recipe, so it must not change what is built (`ssh_source_cidr: SSH_SOURCE_CIDR`)." },
            }),
            &["template"],
        ),
    );
    props.insert(
        "command".into(),
        object(
            "A program that writes a disk or rootfs into $IMAGEPIPE_OUTPUT_DIR.",
            json!({
                "run": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "minItems": 1 } ], "description": "Program and arguments." },
                "inputs": inputs(),
                "artifact": string("Glob (inside the output directory) naming the artifact."),
            }),
            &["run"],
        ),
    );
    let one_of: Vec<Value> = [
        json!({ "required": ["file"] }),
        json!({ "required": ["url"], "oneOf": [ { "required": ["sha256"] }, { "required": ["sha512"] }, { "required": ["checksums_url"] } ] }),
        json!({ "required": ["mmdebstrap"] }),
        json!({ "required": ["packer"] }),
        json!({ "required": ["command"] }),
    ]
    .into();
    json!({
        "type": "object",
        "description": "Exactly one source: file, url (+ sha256 or checksums_url), mmdebstrap, packer or command.",
        "properties": props,
        "additionalProperties": false,
        "oneOf": one_of,
    })
}

fn compression() -> Value {
    json!({
        "type": "string",
        "pattern": "^(none|gzip(:[1-9])?|zstd(:([1-9]|1[0-9]))?)$",
        "description": format!("Layer compression: {}, optionally with a level (`gzip:9`, `zstd:3`).", Compression::NAMES.join(", ")),
    })
}

fn tags() -> Value {
    json!({
        "type": "array", "items": { "type": "string" }, "minItems": 1,
        "description": "Tag templates; the first is immutable and must contain {hash}.",
    })
}

fn verify() -> Value {
    object(
        "Boot verification by `imagepipe verify` (containerdisk and artifact images).",
        json!({
            "required": { "type": "boolean", "description": "Mutable tags move only for digests that passed `imagepipe verify`." },
            "timeout": string("Time for the guest to finish cloud-init under KVM (default 3m); TCG gets five times as long."),
            "memory": string("Guest memory, e.g. 1GiB (default 1024MiB)."),
            "firmware": { "enum": ["bios", "uefi"], "description": "bios (SeaBIOS, default) or uefi (OVMF)." },
            "checks": {
                "type": "array",
                "description": "Commands run in the guest after cloud-init; each must exit 0 and print `expect`.",
                "items": object(
                    "A check.",
                    json!({
                        "run": string("A shell command line run by /bin/sh -c in the guest."),
                        "expect": string("Text the output must contain; placeholders such as {kubernetes}, {runc}."),
                    }),
                    &["run"],
                ),
            },
        }),
        &[],
    )
}

fn prerelease_tags() -> Value {
    json!({
        "type": "array", "items": { "type": "string" },
        "description": "Mutable tag templates (from `tags`) that pre-releases such as v1.34.0-rc.1 move too; others stay on the newest release.",
    })
}

/// The catalog's JSON Schema (draft 2020-12).
pub fn schema() -> Value {
    let platform = json!({ "type": "string", "pattern": "^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$", "description": "OCI platform, e.g. linux/amd64." });
    let image = object(
        "One image: a repository under each target's namespace.",
        json!({
            "name": { "type": "string", "pattern": "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*$", "description": "Repository name." },
            "os": object("Operating system of the image.", json!({
                "distro": string("e.g. ubuntu, debian, flatcar."),
                "version": { "type": ["string", "number"], "description": "e.g. \"24.04\" (quote it)." },
            }), &["distro", "version"]),
            "source": source(),
            "platform": platform,
            "platforms": { "type": "array", "minItems": 1, "description": "One source per platform: builds a multi-arch index.",
                "items": object("A platform and its source.", json!({ "platform": platform, "source": source() }), &["platform", "source"]) },
            "format": { "enum": Format::NAMES, "description": "containerdisk (KubeVirt /disk/), rootfs (a filesystem layer), artifact (the disk as an OCI artifact) or machine-image (built by Packer in each cloud target)." },
            "kubernetes": { "type": "boolean", "description": "Built once per Kubernetes release (`--release`)." },
            "tags": tags(),
            "prerelease_tags": prerelease_tags(),
            "compression": compression(),
            "targets": strings("Restrict the image to these targets (default: all)."),
            "verify": verify(),
            "labels": { "type": "object", "description": "Labels you add: OCI config labels (containerdisk, rootfs) and manifest annotations; keys in reverse domain notation (`org.opencontainers.image.authors`), never imagepipe's own (`io.imagepipe.*`, `org.opencontainers.image.created|ref.name|version`). Part of the recipe.",
                "propertyNames": { "pattern": "^[A-Za-z0-9][A-Za-z0-9._/-]{0,255}$" },
                "additionalProperties": { "type": "string" } },
            "disk": object(
                "Convert and grow the disk before packaging (containerdisk, artifact): written by imagepipe itself, the same bytes on every machine. Part of the recipe.",
                json!({
                    "format": { "enum": crate::catalog::DiskFormat::NAMES, "description": "qcow2 or raw (default: the source's own format)." },
                    "resize": { "type": "string", "pattern": "^\\+?[0-9]+([KkMmGgTt](i?B)?)?$", "description": "`+8G` adds 8 GiB; `20G` grows to 20 GiB. A disk never shrinks." },
                }),
                &[],
            ),
            "config": object(
                "Container runtime configuration of a `format: rootfs` image.",
                json!({
                    "env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Environment variables, e.g. PATH." },
                    "entrypoint": strings("The entrypoint, as a list (no shell)."),
                    "cmd": strings("Default arguments, as a list."),
                    "working_dir": string("The working directory."),
                    "user": string("The user (name or uid[:gid])."),
                }),
                &[],
            ),
        }),
        &["name", "os", "format"],
    );
    let target = object(
        "Where images go: an OCI layout directory or a registry.",
        json!({
            "name": string("Target name, used by --target."),
            "layout": string("OCI image layout directory, relative to the catalog."),
            "registry": string("Registry host[:port]; `http://` only with insecure: true."),
            "namespace": string("Repository path prefix under the registry."),
            "insecure": { "type": "boolean", "description": "Allow plain HTTP." },
            "cloud": string("Cloud provider of a region target receiving machine images (e.g. outscale, aws, openstack)."),
            "region": string("The cloud region, e.g. eu-west-2."),
            "env": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Environment for Packer and the existence check in this region, e.g. OSC_REGION." },
            "exists": { "oneOf": [ { "type": "string" }, { "type": "array", "items": { "type": "string" }, "minItems": 1 } ], "description": "Command telling whether {image_name} exists in {region}: exit 0 yes, 1 no." },
            "chunk_size": { "type": "string", "pattern": "^[0-9]+ *([KkMmGg](i?B)?|B)?$", "description": "Upload in resumable chunks of this size (at least 5MiB), e.g. `16MiB`; default: one streamed PUT per blob." },
        }),
        &["name"],
    );
    let variable = json!({
        "oneOf": [
            { "type": "string" },
            object("A pinned version with an environment override.", json!({
                "default": string("The pinned value."),
                "env": { "type": "string", "pattern": "^[A-Z_][A-Z0-9_]*$", "description": "Environment variable overriding the default." },
            }), &["default"]),
        ],
    });
    let globs = |d: &str| strings(d);
    let retention = object(
        "What `cleanup` keeps.",
        json!({
            "keep_last": { "type": "integer", "minimum": 0, "description": "Keep the newest N tags per image." },
            "max_age": { "type": "string", "pattern": "^([0-9]+[smhdw])+$", "description": "Keep tags younger than this (30d, 12h, 2w)." },
            "protect": globs("Tag globs that are always kept."),
            "max_delete": { "type": "integer", "minimum": 0, "description": "Refuse to apply more deletions than this (default 50)." },
            "git": object("Keep tags referenced from git branches.", json!({
                "repo": string("Local clone (bare or not), relative to the catalog."),
                "branches": globs("Branch globs, e.g. main, release-*."),
                "supported_releases": { "type": "integer", "minimum": 0, "description": "Newest N release branches by version." },
                "paths": globs("File globs scanned for references; each must match a file on every scanned branch."),
                "default_branch": string("The default branch (else CI_DEFAULT_BRANCH, origin/HEAD, or the branch HEAD names)."),
                "release_pattern": string("Which branches are release branches: {major}, {minor}, {patch} stand for numbers (default release-{major}.{minor})."),
            }), &[]),
        }),
        &[],
    );
    let mut root = object(
        "imagepipe catalog (images.yml).",
        json!({
            "version": { "const": decode::CATALOG_VERSION, "description": "Catalog format version." },
            "variables": { "type": "object", "additionalProperties": variable, "description": "Pinned component versions." },
            "targets": { "type": "array", "items": target },
            "defaults": object("Defaults for every image.", json!({ "tags": tags(), "prerelease_tags": prerelease_tags(), "compression": compression(), "verify": verify() }), &[]),
            "images": { "type": "array", "items": image },
            "retention": retention,
            "release": object(
                "Which CI tags name a Kubernetes release.",
                json!({ "tag_prefix": { "type": "string", "pattern": "^[A-Za-z0-9._/-]+$", "description": "Release tags start with this (`k8s-` for `k8s-v1.33.6`); a CI tag without it is not a release (the run behaves as in a branch pipeline). Default: none." } }),
                &[],
            ),
        }),
        &["version", "images"],
    );
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["$id"] = json!("https://imagepipe.dev/schema/catalog-v1.json");
    root["title"] = json!("imagepipe catalog");
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        k.sort();
        k
    }

    fn sorted(k: &[&str]) -> Vec<String> {
        let mut k: Vec<String> = k.iter().map(|s| (*s).to_owned()).collect();
        k.sort();
        k
    }

    #[test]
    fn schema_allows_exactly_the_decoder_keys() {
        let s = schema();
        let p = &s["properties"];
        assert_eq!(keys(&s), sorted(decode::TOP_KEYS));
        assert_eq!(keys(&p["targets"]["items"]), sorted(decode::TARGET_KEYS));
        assert_eq!(keys(&p["defaults"]), sorted(decode::DEFAULTS_KEYS));
        assert_eq!(keys(&p["release"]), sorted(decode::RELEASE_KEYS));
        assert_eq!(
            keys(&p["variables"]["additionalProperties"]["oneOf"][1]),
            sorted(decode::VARIABLE_KEYS)
        );
        let image = &p["images"]["items"];
        assert_eq!(keys(image), sorted(decode::IMAGE_KEYS));
        assert_eq!(keys(&image["properties"]["os"]), sorted(decode::OS_KEYS));
        assert_eq!(
            keys(&image["properties"]["config"]),
            sorted(decode::CONFIG_KEYS)
        );
        assert_eq!(
            keys(&image["properties"]["verify"]),
            sorted(decode::VERIFY_KEYS)
        );
        assert_eq!(
            keys(&image["properties"]["disk"]),
            sorted(decode::DISK_KEYS)
        );
        assert_eq!(
            keys(&image["properties"]["verify"]["properties"]["checks"]["items"]),
            sorted(decode::CHECK_KEYS)
        );
        assert_eq!(
            keys(&image["properties"]["platforms"]["items"]),
            sorted(decode::PLATFORM_KEYS)
        );
        let src = &image["properties"]["source"];
        assert_eq!(keys(src), sorted(decode::SOURCE_KEYS));
        assert_eq!(
            keys(&src["properties"]["mmdebstrap"]),
            sorted(decode::MMDEBSTRAP_KEYS)
        );
        assert_eq!(
            keys(&src["properties"]["packer"]),
            sorted(decode::PACKER_KEYS)
        );
        assert_eq!(
            keys(&src["properties"]["command"]),
            sorted(decode::COMMAND_KEYS)
        );
        assert_eq!(keys(&p["retention"]), sorted(decode::RETENTION_KEYS));
        assert_eq!(
            keys(&p["retention"]["properties"]["git"]),
            sorted(decode::GIT_KEYS)
        );
    }
}

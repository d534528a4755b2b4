//! Recipe hash: every byte-determining input changes it; targets, tags,
//! commit, pipeline and time do not.

use std::path::Path;

use imagepipe::catalog::{self, diag::Diagnostics};
use imagepipe::recipe::{RunContext, recipe};
use imagepipe::release::Release;
use imagepipe::source::resolve::DefaultResolver;

use crate::common::{FileServer, SHA_A, Workspace};

const BASE: &str = r#"version: 1
variables:
  runc: { default: "1.2.6", env: RUNC_VERSION }
targets:
  - name: local
    layout: ./store
images:
  - name: disk
    os: { distro: ubuntu, version: "22.04" }
    source:
      url: https://mirror.example.com/images/disk.qcow2
      sha256: "SHA"
    format: containerdisk
  - name: tree
    os: { distro: debian, version: "12" }
    source: { file: rootfs.tar }
    format: rootfs
  - name: deb
    os: { distro: debian, version: "12" }
    source:
      mmdebstrap: { suite: bookworm, variant: minbase, packages: [ca-certificates], mirror: "http://snapshot.debian.org/archive/debian/20250101T000000Z" }
    format: rootfs
  - name: packed
    os: { distro: ubuntu, version: "24.04" }
    kubernetes: true
    source:
      packer: { template: packer/t.json, vars: { disk_size: "20G" }, inputs: ["scripts/*.sh"] }
    format: containerdisk
    tags: ["{name}-{kubernetes}-{hash}"]
  - name: scripted
    os: { distro: ubuntu, version: "24.04" }
    source:
      command: { run: [./build.sh, --size, 2G], inputs: [files] }
    format: artifact
"#;

fn setup() -> Workspace {
    let ws = Workspace::new();
    ws.write("rootfs.tar", b"rootfs bytes");
    ws.write("packer/t.json", b"{\"builders\": []}");
    ws.write("scripts/a.sh", b"echo a");
    ws.write("scripts/b.sh", b"echo b");
    ws.write("build.sh", b"#!/bin/sh\necho build");
    ws.write("files/x.conf", b"x=1");
    ws
}

fn ctx() -> RunContext {
    RunContext {
        release: Some(Release::parse("v1.33.6").unwrap()),
        variables: [("runc".to_owned(), "1.2.6".to_owned())].into(),
        commit: Some("a".repeat(40)),
        pipeline: Some("42".into()),
        pipeline_url: None,
        repository: None,
        source_date_epoch: None,
        commit_time: Some(1_700_000_000),
    }
}

/// The hash of every image of a catalog text, in catalog order.
fn hashes(dir: &Path, text: &str, ctx: &RunContext) -> Vec<String> {
    let path = dir.join("images.yml");
    let mut d = Diagnostics::new(&path);
    let c = catalog::parse(&path, text, &mut d).expect("parses");
    assert!(d.is_empty(), "{:?}", d.into_sorted());
    c.images
        .iter()
        .map(|i| recipe(&c, i, ctx, &DefaultResolver).unwrap().hash)
        .collect()
}

fn base() -> String {
    BASE.replace("SHA", SHA_A)
}

#[test]
fn byte_determining_inputs_change_the_hash() {
    let ws = setup();
    let before = hashes(ws.path(), &base(), &ctx());
    // (what, image index, catalog edit) — each must change exactly that image's hash.
    let edits: Vec<(&str, usize, String)> = vec![
        ("source checksum", 0, base().replace(SHA_A, &"b".repeat(64))),
        (
            "disk file name",
            0,
            base().replace("images/disk.qcow2", "images/disk2.qcow2"),
        ),
        (
            "compression",
            0,
            base().replace(
                "format: containerdisk\n  - name: tree",
                "format: containerdisk\n    compression: zstd\n  - name: tree",
            ),
        ),
        (
            "compression level",
            0,
            base().replace(
                "format: containerdisk\n  - name: tree",
                "format: containerdisk\n    compression: gzip:9\n  - name: tree",
            ),
        ),
        (
            "platform",
            0,
            base().replace(
                "format: containerdisk\n  - name: tree",
                "format: containerdisk\n    platform: linux/arm64\n  - name: tree",
            ),
        ),
        (
            "os version",
            0,
            base().replace("version: \"22.04\"", "version: \"22.10\""),
        ),
        (
            "os distro",
            1,
            base().replace(
                "distro: debian, version: \"12\" }\n    source: { file",
                "distro: devuan, version: \"12\" }\n    source: { file",
            ),
        ),
        (
            "format",
            1,
            base().replace(
                "source: { file: rootfs.tar }\n    format: rootfs",
                "source: { file: rootfs.tar }\n    format: artifact",
            ),
        ),
        ("image name", 1, base().replace("name: tree", "name: tree2")),
        (
            "mmdebstrap packages",
            2,
            base().replace(
                "packages: [ca-certificates]",
                "packages: [ca-certificates, curl]",
            ),
        ),
        (
            "mmdebstrap suite",
            2,
            base().replace("suite: bookworm", "suite: trixie"),
        ),
        (
            "mmdebstrap variant",
            2,
            base().replace("variant: minbase", "variant: apt"),
        ),
        (
            "mmdebstrap mirror",
            2,
            base().replace("20250101T000000Z", "20250201T000000Z"),
        ),
        (
            "packer vars",
            3,
            base().replace("disk_size: \"20G\"", "disk_size: \"30G\""),
        ),
        (
            "packer inputs",
            3,
            base().replace("inputs: [\"scripts/*.sh\"]", "inputs: [\"scripts/a.sh\"]"),
        ),
        (
            "command args",
            4,
            base().replace("--size, 2G", "--size, 3G"),
        ),
    ];
    for (what, idx, text) in edits {
        let after = hashes(ws.path(), &text, &ctx());
        assert_ne!(before[idx], after[idx], "{what} must change the hash");
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            if i != idx {
                assert_eq!(b, a, "{what} must not change image {i}");
            }
        }
    }
}

#[test]
fn input_file_contents_change_the_hash() {
    let ws = setup();
    let before = hashes(ws.path(), &base(), &ctx());
    for (what, file, idx) in [
        ("file source", "rootfs.tar", 1),
        ("packer template", "packer/t.json", 3),
        ("packer input", "scripts/b.sh", 3),
        ("command script", "build.sh", 4),
        ("command input dir", "files/x.conf", 4),
    ] {
        let original = std::fs::read(ws.path().join(file)).unwrap();
        ws.write(file, b"changed");
        let after = hashes(ws.path(), &base(), &ctx());
        assert_ne!(
            before[idx], after[idx],
            "{what} contents must change the hash"
        );
        ws.write(file, &original);
    }
    // A new file matching an input glob changes the recipe too.
    ws.write("scripts/c.sh", b"echo c");
    assert_ne!(before[3], hashes(ws.path(), &base(), &ctx())[3]);
}

#[test]
fn variables_and_release_change_builder_recipes_only() {
    let ws = setup();
    let before = hashes(ws.path(), &base(), &ctx());
    let mut c = ctx();
    c.variables.insert("runc".into(), "1.2.7".into());
    let after = hashes(ws.path(), &base(), &c);
    assert_ne!(before[3], after[3], "packer gets the variables");
    assert_ne!(before[4], after[4], "command gets the variables");
    assert_eq!(
        before[..3],
        after[..3],
        "url/file/mmdebstrap images do not use variables"
    );
    let mut c = ctx();
    c.release = Some(Release::parse("v1.33.7").unwrap());
    let after = hashes(ws.path(), &base(), &c);
    assert_ne!(
        before[3], after[3],
        "the Kubernetes version is part of a release image"
    );
    assert_eq!(before[0], after[0]);
}

#[test]
fn targets_tags_commit_pipeline_time_and_url_host_do_not_change_the_hash() {
    let ws = setup();
    let before = hashes(ws.path(), &base(), &ctx());
    let edits = [
        base().replace("  - name: local\n    layout: ./store\n", "  - name: other\n    layout: ./elsewhere\n  - name: reg\n    registry: r.example.com\n"),
        base().replace("tags: [\"{name}-{kubernetes}-{hash}\"]", "tags: [\"v-{kubernetes}-{hash:20}\", latest]"),
        base().replace("https://mirror.example.com/images/", "https://other-mirror.example.org/pub/"),
        base().replace("version: 1\n", "version: 1\ndefaults:\n  tags: [\"{hash}\", \"{commit}\", \"{pipeline}\"]\n"),
    ];
    for text in edits {
        assert_eq!(
            before,
            hashes(ws.path(), &text, &ctx()),
            "edit changed a hash:\n{text}"
        );
    }
    let mut c = ctx();
    c.commit = Some("b".repeat(40));
    c.pipeline = Some("43".into());
    c.commit_time = Some(0);
    assert_eq!(before, hashes(ws.path(), &base(), &c));
}

#[test]
fn the_encoding_is_pinned() {
    // If this fails, every immutable tag users have changes: bump RECIPE_VERSION
    // deliberately and update docs/identity.md instead.
    let ws = setup();
    let text = "version: 1\nimages:\n  - name: disk\n    os: { distro: ubuntu, version: \"22.04\" }\n    source: { url: \"https://x/disk.qcow2\", sha256: \"SHA\" }\n    format: containerdisk\n"
        .replace("SHA", SHA_A);
    let path = ws.path().join("images.yml");
    let mut d = Diagnostics::new(&path);
    let c = catalog::parse(&path, &text, &mut d).unwrap();
    let r = recipe(&c, &c.images[0], &RunContext::default(), &DefaultResolver).unwrap();
    assert_eq!(
        r.canonical,
        format!(
            r#"{{"compression":"gzip:3","format":"containerdisk","kubernetes":null,"layout":"imagepipe-layout/4","name":"disk","os":{{"distro":"ubuntu","version":"22.04"}},"platforms":[{{"platform":"linux/amd64","source":{{"decompress":null,"kind":"url","name":"disk.qcow2","sha256":"{SHA_A}"}}}}],"recipe":2,"source_date_epoch":null,"variables":null}}"#
        )
    );
    assert_eq!(
        r.hash,
        imagepipe::recipe::sha256_hex(r.canonical.as_bytes())
    );
}

#[test]
fn checksums_url_resolves_through_the_upstream_sums_file() {
    let server = FileServer::start();
    let disk = b"disk image bytes";
    let gnu = format!(
        "{}  other.img\n{} *disk.qcow2\n",
        "c".repeat(64),
        crate::common::sha256_hex(disk)
    );
    let sums = server.put("/SHA256SUMS", gnu);
    let ws = setup();
    let pinned = hashes(
        ws.path(),
        &base().replace(SHA_A, &crate::common::sha256_hex(disk)),
        &ctx(),
    );
    let text = base().replace(
        &format!("sha256: \"{SHA_A}\""),
        &format!("checksums_url: \"{sums}\""),
    );
    assert_eq!(
        hashes(ws.path(), &text, &ctx())[0],
        pinned[0],
        "same checksum, same recipe"
    );
    // BSD format.
    let bsd = format!(
        "SHA256 (disk.qcow2) = {}\n",
        crate::common::sha256_hex(disk)
    );
    let sums = server.put("/bsd/CHECKSUM", bsd);
    let text = base().replace(
        &format!("sha256: \"{SHA_A}\""),
        &format!("checksums_url: \"{sums}\""),
    );
    assert_eq!(hashes(ws.path(), &text, &ctx())[0], pinned[0]);
}

#[test]
fn unpinned_mmdebstrap_is_flagged() {
    let ws = setup();
    let text = base().replace(
        ", mirror: \"http://snapshot.debian.org/archive/debian/20250101T000000Z\"",
        "",
    );
    let path = ws.path().join("images.yml");
    let mut d = Diagnostics::new(&path);
    let c = catalog::parse(&path, &text, &mut d).unwrap();
    let r = recipe(&c, &c.images[2], &ctx(), &DefaultResolver).unwrap();
    assert!(r.unpinned.is_some());
    let r = recipe(&c, &c.images[0], &ctx(), &DefaultResolver).unwrap();
    assert!(r.unpinned.is_none());
}

mod property {
    //! For random run contexts and catalog knobs, two recipes hash alike
    //! exactly when every input that reaches the image's bytes is alike.

    use proptest::prelude::*;

    use super::*;

    /// The knobs varied: the first five reach the bytes of a builder image
    /// (`scripted`, a `command` source); the rest must never matter.
    #[derive(Clone, Debug)]
    struct Knobs {
        sde: Option<i64>,
        compression: &'static str,
        runc: &'static str,
        platform: &'static str,
        size: &'static str,
        commit: String,
        pipeline: Option<String>,
        commit_time: Option<i64>,
        tags: &'static str,
    }

    fn knobs() -> impl Strategy<Value = Knobs> {
        (
            prop_oneof![Just(None), (0i64..3).prop_map(Some)],
            prop_oneof![Just("gzip"), Just("gzip:1"), Just("zstd"), Just("none")],
            prop_oneof![Just("1.2.6"), Just("1.3.0")],
            prop_oneof![Just("linux/amd64"), Just("linux/arm64")],
            prop_oneof![Just("2G"), Just("3G")],
            "[0-9a-f]{40}",
            proptest::option::of("[0-9]{1,4}"),
            proptest::option::of(0i64..3),
            prop_oneof![Just("[\"{name}-{hash}\"]"), Just("[\"{hash}\", latest]")],
        )
            .prop_map(
                |(sde, compression, runc, platform, size, commit, pipeline, commit_time, tags)| {
                    Knobs {
                        sde,
                        compression,
                        runc,
                        platform,
                        size,
                        commit,
                        pipeline,
                        commit_time,
                        tags,
                    }
                },
            )
    }

    fn bytes_key(k: &Knobs) -> (Option<i64>, &str, &str, &str, &str) {
        (k.sde, k.compression, k.runc, k.platform, k.size)
    }

    fn hash(dir: &Path, k: &Knobs) -> String {
        let text = format!(
            "version: 1\nvariables:\n  runc: {{ default: \"1.0.0\" }}\ndefaults:\n  tags: {}\nimages:\n  - name: scripted\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source:\n      command: {{ run: [./build.sh, --size, {}] }}\n    format: containerdisk\n    compression: {}\n    platform: {}\n",
            k.tags, k.size, k.compression, k.platform
        );
        let ctx = RunContext {
            release: None,
            variables: [("runc".to_owned(), k.runc.to_owned())].into(),
            commit: Some(k.commit.clone()),
            pipeline: k.pipeline.clone(),
            pipeline_url: None,
            repository: None,
            source_date_epoch: k.sde,
            commit_time: k.commit_time,
        };
        hashes(dir, &text, &ctx).remove(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn equal_hashes_exactly_when_byte_inputs_are_equal(a in knobs(), b in knobs()) {
            let ws = setup();
            let (ha, hb) = (hash(ws.path(), &a), hash(ws.path(), &b));
            prop_assert_eq!(ha == hb, bytes_key(&a) == bytes_key(&b), "{:?} vs {:?}", a, b);
        }
    }
}

/// The canonical recipe of the first image of a catalog text.
fn canonical(dir: &Path, text: &str) -> String {
    let path = dir.join("images.yml");
    let mut d = Diagnostics::new(&path);
    let c = catalog::parse(&path, text, &mut d).expect("parses");
    assert!(d.is_empty(), "{:?}", d.into_sorted());
    recipe(&c, &c.images[0], &ctx(), &DefaultResolver)
        .unwrap()
        .canonical
}

#[test]
fn a_sha512_checksum_is_recorded_as_sha512_pinned_or_listed() {
    let server = FileServer::start();
    let disk = b"debian cloud image bytes";
    let sha512 = {
        use sha2::Digest as _;
        imagepipe::oci::hash::hex(&sha2::Sha512::digest(disk))
    };
    let ws = setup();
    let pinned = base().replace(
        &format!("sha256: \"{SHA_A}\""),
        &format!("sha512: \"{sha512}\""),
    );
    let recipe = canonical(ws.path(), &pinned);
    assert!(
        recipe.contains(&format!("\"sha512\":\"{sha512}\"")),
        "{recipe}"
    );
    assert!(!recipe.contains("\"sha256\""), "{recipe}");
    // The same digest from Debian's SHA512SUMS (GNU) and a BSD-style list.
    for (path, list) in [
        (
            "/SHA512SUMS",
            format!("{}  other.qcow2\n{sha512}  disk.qcow2\n", "d".repeat(128)),
        ),
        (
            "/bsd/CHECKSUM",
            format!("SHA512 (disk.qcow2) = {}\n", sha512.to_uppercase()),
        ),
    ] {
        let sums = server.put(path, list);
        let listed = base().replace(
            &format!("sha256: \"{SHA_A}\""),
            &format!("checksums_url: \"{sums}\""),
        );
        assert_eq!(canonical(ws.path(), &listed), recipe, "{path}");
    }
    // Another algorithm, another recipe.
    assert_ne!(
        hashes(ws.path(), &pinned, &ctx())[0],
        hashes(ws.path(), &base(), &ctx())[0]
    );
}

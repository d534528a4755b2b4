//! Kubespray's CI disks as Kubespray builds them (`test-infra/image-builder`):
//! every source shape of its list from loopback stand-ins (a `.img` that is
//! a compressed qcow2, a plain `.qcow2`, a raw disk converted, a
//! `.qcow2.xz`; SHA-256 and SHA-512; GNU and BSD checksum files),
//! converted to qcow2 and grown by `+8G`, with the authors label; read back
//! by umoci, qemu-img, skopeo and containerd's `ctr`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::common::{FileServer, Workspace, ext4_fixture, run, sh, sha256_hex, sha512_hex};

const GIB8: u64 = 8 << 30;
const AUTHORS: &str = "The Kubespray Project <kubespray@googlegroups.com>";

/// The guest every stand-in holds: a real ext4 image of real files, on a
/// 24 MiB disk.
fn guest(dir: &Path) -> std::path::PathBuf {
    let mut disk = ext4_fixture();
    disk.resize(24 << 20, 0);
    let path = dir.join("guest.raw");
    std::fs::write(&path, disk).unwrap();
    path
}

fn qemu_img_convert(dir: &Path, from: &Path, to: &str, extra: &[&str]) -> Vec<u8> {
    let out = dir.join(to);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend(extra);
    args.extend([from.to_str().unwrap(), out.to_str().unwrap()]);
    sh("qemu-img", &args, dir);
    std::fs::read(out).unwrap()
}

fn xz(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = liblzma::write::XzEncoder::new(&mut out, 6);
    std::io::Write::write_all(&mut enc, bytes).unwrap();
    enc.finish().unwrap();
    out
}

/// Kubespray's shapes on `server`: the catalog's `images:` entries.
fn standins(server: &FileServer, dir: &Path) -> String {
    let raw_path = guest(dir);
    let raw = std::fs::read(&raw_path).unwrap();
    // ubuntu: `.img` that is a compressed qcow2 (`converted: false`), sha256.
    let ubuntu = qemu_img_convert(dir, &raw_path, "noble.img", &["-c"]);
    // debian: `.qcow2`, sha512 from a GNU SHA512SUMS.
    let debian = qemu_img_convert(dir, &raw_path, "debian.qcow2", &[]);
    // openeuler: `.qcow2.xz`, sha256 of the `.xz`.
    let openeuler = xz(&debian);
    let ubuntu_url = server.put("/noble/noble-server-cloudimg-amd64.img", ubuntu.clone());
    let debian_url = server.put("/trixie/debian-13-generic-amd64.qcow2", debian.clone());
    let debian_sums = server.put(
        "/trixie/SHA512SUMS",
        format!(
            "{}  debian-13-generic-arm64.qcow2\n{}  debian-13-generic-amd64.qcow2\n",
            sha512_hex(b"other"),
            sha512_hex(&debian)
        ),
    );
    let euler_url = server.put("/oe/openEuler-24.03-LTS-x86_64.qcow2.xz", openeuler.clone());
    // A raw disk, converted, with a BSD-style SHA256SUMS.
    let raw_url = server.put("/raw/disk-kvm.raw", raw.clone());
    let raw_sums = server.put(
        "/raw/SHA256SUMS",
        format!("SHA256 (disk-kvm.raw) = {}\n", sha256_hex(&raw)),
    );
    let image = |name: &str, source: String| {
        format!(
            "  - name: vm-{name}\n    os: {{ distro: {name}, version: \"1\" }}\n    source: {source}\n    format: containerdisk\n    disk: {{ format: qcow2, resize: \"+8G\" }}\n    labels:\n      org.opencontainers.image.authors: \"{AUTHORS}\"\n"
        )
    };
    [
        image(
            "ubuntu-2404",
            format!(
                "{{ url: \"{ubuntu_url}\", sha256: \"sha256:{}\" }}",
                sha256_hex(&ubuntu)
            ),
        ),
        image(
            "debian-13",
            format!("{{ url: \"{debian_url}\", checksums_url: \"{debian_sums}\" }}"),
        ),
        image(
            "debian-13-pinned",
            format!(
                "{{ url: \"{debian_url}\", sha512: \"sha512:{}\" }}",
                sha512_hex(&debian)
            ),
        ),
        image(
            "openeuler-2403",
            format!(
                "{{ url: \"{euler_url}\", sha256: \"{}\" }}",
                sha256_hex(&openeuler)
            ),
        ),
        image(
            "raw",
            format!("{{ url: \"{raw_url}\", checksums_url: \"{raw_sums}\" }}"),
        ),
    ]
    .concat()
}

fn build(ws: &Workspace, threads: &str) -> String {
    let mut c = ws.cmd();
    c.args(["build", "-q"]).env("IMAGEPIPE_THREADS", threads);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

fn qemu_info(path: &Path) -> Value {
    serde_json::from_str(&sh(
        "qemu-img",
        &["info", "--output=json", "--", path.to_str().unwrap()],
        path.parent().unwrap(),
    ))
    .unwrap()
}

#[test]
fn every_kubespray_shape_becomes_a_grown_qcow2_containerdisk_with_one_digest() {
    let server = FileServer::start();
    let scratch = tempfile::tempdir().unwrap();
    let images = standins(&server, scratch.path());
    let catalog = format!("version: 1\nimages:\n{images}");
    let ws = Workspace::with_catalog(&catalog);
    let lines = build(&ws, "4");
    assert_eq!(lines.lines().count(), 5, "{lines}");
    let guest_size = 24u64 << 20;
    let ctr = crate::containerd::Containerd::start();
    for line in lines.lines() {
        let mut parts = line.split_whitespace();
        let (name, tag) = (parts.next().unwrap(), parts.next().unwrap());
        let layout = ws.path().join(".imagepipe/store").join(name);
        let unpack = tempfile::tempdir().unwrap();
        let bundle = crate::common::umoci_unpack(&layout, tag, unpack.path());
        // One file under /disk/, owned by qemu (107:107), a qcow2 grown by
        // exactly 8 GiB that reads as the guest.
        let files: Vec<_> = std::fs::read_dir(bundle.join("rootfs/disk"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{name}: {files:?}");
        let disk = &files[0];
        assert!(
            disk.to_string_lossy().ends_with(".qcow2"),
            "{name}: {}",
            disk.display()
        );
        let meta = std::fs::metadata(disk).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (107, 107), "{name}");
        let info = qemu_info(disk);
        assert_eq!(info["format"], "qcow2", "{name}: {info}");
        assert_eq!(info["virtual-size"], guest_size + GIB8, "{name}: {info}");
        sh(
            "qemu-img",
            &["check", "-f", "qcow2", disk.to_str().unwrap()],
            ws.path(),
        );
        sh(
            "qemu-img",
            &[
                "compare",
                "-f",
                "raw",
                "-F",
                "qcow2",
                scratch.path().join("guest.raw").to_str().unwrap(),
                disk.to_str().unwrap(),
            ],
            ws.path(),
        );
        // The authors label in the image configuration.
        let inspect: Value = serde_json::from_str(&sh(
            "skopeo",
            &["inspect", &format!("oci:{}:{tag}", layout.display())],
            ws.path(),
        ))
        .unwrap();
        assert_eq!(
            inspect["Labels"]["org.opencontainers.image.authors"], AUTHORS,
            "{name}"
        );
        // containerd imports and unpacks it.
        let names = crate::containerd::import(&ctr, &ws, &layout);
        assert!(
            names.contains(&format!("imagepipe.local/{name}:{tag}")),
            "{name}: {names:?}"
        );
    }
    // The same source bytes give the same images, whichever way they came.
    let digest = |name: &str| {
        lines
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .to_owned()
    };
    assert_ne!(digest("vm-debian-13"), digest("vm-ubuntu-2404"));
    // A fresh store and cache elsewhere, on one thread: the same digests.
    let other = Workspace::with_catalog(&catalog);
    assert_eq!(build(&other, "1"), lines);
}

#[test]
fn a_disk_only_grows_and_says_so() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: vm\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    disk: { resize: \"16M\" }\n",
    );
    crate::common::qcow2(&ws, "disk.qcow2", "32M");
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("would shrink the disk from its 33554432 bytes"),
        "{}",
        out.stderr
    );
    // No partial image is left in the store.
    assert!(!ws.path().join(".imagepipe/store/vm/index.json").exists());
    // Growing to a size keeps the format, and the recipe changes with it.
    let plan = |ws: &Workspace| {
        let mut c = ws.cmd();
        c.args(["build", "-q"]);
        run(c)
    };
    ws.write(
        "images.yml",
        "version: 1\nimages:\n  - name: vm\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    disk: { resize: \"64M\" }\n",
    );
    let grown = plan(&ws);
    assert_eq!(grown.code, 0, "{}", grown.stderr);
    let tag = grown.stdout.split_whitespace().nth(1).unwrap().to_owned();
    let layout = ws.path().join(".imagepipe/store/vm");
    let unpack = tempfile::tempdir().unwrap();
    let bundle = crate::common::umoci_unpack(&layout, &tag, unpack.path());
    let info = qemu_info(&bundle.join("rootfs/disk/disk.qcow2"));
    assert_eq!(info["virtual-size"], 64u64 << 20, "{info}");
}

#[test]
fn disk_mistakes_are_named_by_validate() {
    for (disk, says) in [
        ("{ resize: \"-8G\" }", "a disk only grows"),
        ("{ resize: \"8 apples\" }", "is not a disk size"),
        ("{ resize: \"1000\" }", "is not a disk size"),
        ("{ format: vmdk }", "unknown disk format `vmdk`"),
        ("{ size: 8G }", "size"),
        ("{ }", "neither `format` nor `resize`"),
    ] {
        let ws = Workspace::with_catalog(&format!(
            "version: 1\nimages:\n  - name: vm\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n    disk: {disk}\n"
        ));
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{disk}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{disk}: {}", out.stderr);
    }
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: r\n    os: { distro: x, version: \"1\" }\n    source: { file: root.tar }\n    format: rootfs\n    disk: { format: qcow2 }\n",
    );
    let mut c = ws.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`disk` converts and grows disk images"),
        "{}",
        out.stderr
    );
}

/// Kubespray's staging job (Cloud Build): `make push-single-staging
/// image_name=ubuntu-2404` pushes one image to the Kubernetes staging
/// registry and expects `:latest` there, while quay is not reachable.
#[test]
fn the_staging_push_moves_latest_on_staging_while_quay_is_down() {
    let staging = crate::registry_fixture::Registry::start();
    let quay = crate::registry_fixture::Registry::start();
    let quay_addr = quay.addr.clone();
    drop(quay);
    let image = |name: &str| {
        format!(
            "  - name: {name}\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: {name}.qcow2 }}\n    format: containerdisk\n    disk: {{ format: qcow2, resize: \"+8G\" }}\n"
        )
    };
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: quay, registry: \"{quay_addr}\", namespace: kubespray, insecure: true }}\n  - {{ name: staging, registry: \"{}\", namespace: k8s-staging-images/kubespray, insecure: true }}\nimages:\n{}{}",
        staging.addr,
        image("vm-ubuntu-2404"),
        image("vm-debian-13"),
    ));
    crate::common::qcow2(&ws, "vm-ubuntu-2404.qcow2", "8M");
    crate::common::qcow2(&ws, "vm-debian-13.qcow2", "4M");
    let mut c = ws.cmd();
    c.args([
        "publish",
        "--only",
        "vm-ubuntu-2404",
        "--target",
        "staging",
        "--format",
        "json",
    ]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // quay, which the run does not select, is read once: a warning, no retries.
    assert!(out.stderr.contains("quay: cannot read"), "{}", out.stderr);
    assert!(!out.stderr.contains("retrying"), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{v}");
    assert_eq!(items[0]["target"], "staging");
    assert_eq!(items[0]["moved"], serde_json::json!(["latest"]), "{v}");
    let tag = items[0]["tag"].as_str().unwrap();
    let repo = format!(
        "docker://{}/k8s-staging-images/kubespray/vm-ubuntu-2404",
        staging.addr
    );
    let digest = |t: &str| {
        let raw = sh(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("{repo}:{t}"),
            ],
            ws.path(),
        );
        sha256_hex(raw.as_bytes())
    };
    assert_eq!(digest("latest"), digest(tag));
    // The other image was not selected: nothing of it on staging.
    let other = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!(
                "docker://{}/k8s-staging-images/kubespray/vm-debian-13:latest",
                staging.addr
            ),
        ])
        .output()
        .unwrap();
    assert!(!other.status.success());
}

/// Kubespray's list as the repository beside this one has it
/// (`../shared/adoption/kubespray`), when it is there: key → (url, checksum).
fn upstream_list() -> Option<Vec<(String, String, String)>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/adoption/kubespray/roles/kubevirt-images/defaults/main.yml");
    let text = std::fs::read_to_string(path).ok()?;
    let mut out = Vec::new();
    let mut key = None;
    let mut url = None;
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !k.starts_with(' ')
            && !k.starts_with('#')
        {
            key = Some(k.to_owned());
        } else if let Some(u) = line.trim().strip_prefix("url: ") {
            url = Some(u.to_owned());
        } else if let Some(c) = line.trim().strip_prefix("checksum: ") {
            out.push((key.clone()?, url.take()?, c.to_owned()));
        }
    }
    Some(out)
}

#[test]
fn the_example_catalog_is_kubesprays_real_list() {
    use imagepipe::catalog::{Checksum, DiskChange, DiskFormat, Format, Resize, Source};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubespray-ci/images.yml");
    let catalog = imagepipe::catalog::load(&path).expect("the example validates");
    assert_eq!(catalog.images.len(), 27);
    let mut listed = Vec::new();
    for image in &catalog.images {
        let name = image.name.value.as_str();
        assert_eq!(image.format, Format::ContainerDisk, "{name}");
        assert_eq!(
            image.disk,
            Some(DiskChange {
                format: Some(DiskFormat::Qcow2),
                resize: Some(Resize::Grow(GIB8)),
            }),
            "{name}"
        );
        assert_eq!(
            image
                .labels
                .get("org.opencontainers.image.authors")
                .map(String::as_str),
            Some(AUTHORS),
            "{name}"
        );
        let Source::Url {
            url,
            checksum: Checksum::Pinned(digest),
            ..
        } = &image.platforms[0].source
        else {
            panic!("{name}: a pinned url source");
        };
        listed.push((
            name.trim_start_matches("vm-").to_owned(),
            url.clone(),
            digest.to_string(),
        ));
    }
    let sha512: Vec<&str> = listed
        .iter()
        .filter(|(_, _, c)| c.starts_with("sha512:"))
        .map(|(k, _, _)| k.as_str())
        .collect();
    assert_eq!(
        sha512,
        [
            "debian-10",
            "debian-11",
            "debian-12",
            "debian-13",
            "flatcar-4081"
        ]
    );
    // Key by key, the same URLs and checksums as Kubespray's own file.
    if let Some(upstream) = upstream_list() {
        assert_eq!(listed, upstream);
    }
}

#[test]
fn a_decompressed_raw_download_stays_sparse() {
    let server = FileServer::start();
    let mut disk = ext4_fixture();
    disk.resize(256 << 20, 0);
    let packed = xz(&disk);
    let url = server.put("/images/disk.raw.xz", packed.clone());
    let ws = Workspace::with_catalog(&format!(
        "version: 1\nimages:\n  - name: vm\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", sha256: \"{}\" }}\n    format: containerdisk\n    disk: {{ format: raw, resize: \"+1G\" }}\n",
        sha256_hex(&packed)
    ));
    build(&ws, "2");
    let cached = ws
        .path()
        .join(".imagepipe/cache/decompressed")
        .join(sha256_hex(&packed))
        .join("disk.raw");
    let meta = std::fs::metadata(&cached).unwrap();
    assert_eq!(meta.len(), 256 << 20);
    let allocated = meta.blocks() * 512;
    assert!(allocated < 16 << 20, "{allocated} bytes allocated");
    assert_eq!(std::fs::read(&cached).unwrap(), disk);
}

/// `disk:` on an artifact and on every platform of a multi-arch index.
#[test]
fn artifacts_and_every_platform_are_converted_too() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: art\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.raw }\n    format: artifact\n    compression: none\n    disk: { format: qcow2, resize: \"+1G\" }\n  - name: multi\n    os: { distro: x, version: \"1\" }\n    platforms:\n      - { platform: linux/amd64, source: { file: disk.raw } }\n      - { platform: linux/arm64, source: { file: disk.raw } }\n    format: containerdisk\n    disk: { format: qcow2 }\n",
    );
    let mut disk = ext4_fixture();
    disk.resize(8 << 20, 0);
    ws.write("disk.raw", disk);
    let lines = build(&ws, "2");
    let art_tag = lines
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let layout = ws.path().join(".imagepipe/store/art");
    let manifest: Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{art_tag}", layout.display()),
        ],
        ws.path(),
    ))
    .unwrap();
    let layer = &manifest["layers"][0];
    assert_eq!(
        layer["mediaType"], "application/vnd.imagepipe.disk.qcow2",
        "{manifest}"
    );
    assert_eq!(
        layer["annotations"]["org.opencontainers.image.title"],
        "disk.qcow2"
    );
    let blob = layout.join("blobs/sha256").join(
        layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let info = qemu_info(&blob);
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], (8u64 << 20) + (1 << 30));
    // Both platforms of the index hold the converted disk.
    let multi_tag = lines
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let index: Value = serde_json::from_str(&sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!(
                "oci:{}:{multi_tag}",
                ws.path().join(".imagepipe/store/multi").display()
            ),
        ],
        ws.path(),
    ))
    .unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
}

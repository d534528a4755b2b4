//! Disk images that name host files: a qcow2 backing file (a path, or a
//! `json:` description), an external data file, a `json:` file name. QEMU
//! would open the host file and show it to the guest; imagepipe refuses the
//! disk, naming the key, with nothing tagged.

use crate::common::{Workspace, run, sh};

fn catalog(file: &str, format: &str) -> String {
    format!(
        "version: 1\nimages:\n  - name: vm\n    os: {{ distro: debian, version: \"12\" }}\n    source: {{ file: \"{file}\" }}\n    format: {format}\n"
    )
}

/// `build` fails with exit 1, says `wanted` (each), and tags nothing.
fn refused(ws: &Workspace, wanted: &[&str]) {
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    for w in wanted {
        assert!(out.stderr.contains(w), "no `{w}` in: {}", out.stderr);
    }
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let index = ws.path().join(".imagepipe/store/vm/index.json");
    let tagged = std::fs::read_to_string(&index).unwrap_or_default();
    assert!(!tagged.contains("ref.name"), "{tagged}");
}

#[test]
fn a_disk_that_names_a_host_file_is_refused_at_build() {
    let ws = Workspace::new();
    let secret = ws.write("host/secret.raw", vec![b's'; 65_536]);
    let secret = secret.to_str().unwrap();
    let q = |args: &[&str]| sh("qemu-img", args, ws.path());
    q(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        secret,
        "-F",
        "raw",
        "backing.qcow2",
        "64K",
    ]);
    q(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={secret},data_file_raw=on"),
        "data.qcow2",
        "64K",
    ]);
    let json = format!(
        "json:{{\"driver\":\"raw\",\"file\":{{\"driver\":\"file\",\"filename\":\"{secret}\"}}}}"
    );
    q(&[
        "create",
        "-q",
        "-u",
        "-f",
        "qcow2",
        "-b",
        &json,
        "-F",
        "raw",
        "json.qcow2",
        "64K",
    ]);
    for format in ["containerdisk", "artifact"] {
        ws.write("images.yml", catalog("backing.qcow2", format));
        refused(&ws, &["refers outside itself", "backing_file", secret]);
        ws.write("images.yml", catalog("data.qcow2", format));
        refused(&ws, &["refers outside itself", "data_file", secret]);
        ws.write("images.yml", catalog("json.qcow2", format));
        refused(&ws, &["refers outside itself", "`json:`", "backing_file"]);
    }
    // A file whose name QEMU would read as a description.
    ws.write("json:y", vec![0u8; 65_536]);
    ws.write("images.yml", catalog("json:y", "containerdisk"));
    refused(&ws, &["json:", "rename the file"]);
    // The same disk flattened, as the message says, is packaged.
    sh(
        "qemu-img",
        &["convert", "-O", "qcow2", "backing.qcow2", "flat.qcow2"],
        ws.path(),
    );
    ws.write("images.yml", catalog("flat.qcow2", "containerdisk"));
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// 64 MiB of text in words: compressible, slow to compress at gzip:9.
fn words(n: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "kubeadm ",
        "init ",
        "--config ",
        "/etc/kubernetes ",
        "containerd ",
        "runc\n",
        "node ",
        "image ",
        "ubuntu ",
        "debian ",
        "cluster ",
        "api ",
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(n + 32);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(WORDS[(x % 12) as usize].as_bytes());
        if x.is_multiple_of(7) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(n);
    out
}

/// Starts `build`, waits until the disk is being packaged (a temporary
/// blob of the store larger than any metadata file: the layer), runs
/// `change`, and returns the build's result.
fn change_while_packaging(ws: &Workspace, change: impl FnOnce(u32)) -> crate::common::Output {
    let child = ws
        .process()
        .args(["build", "-q"])
        .env("IMAGEPIPE_THREADS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let tmp = ws.path().join(".imagepipe/store/vm/.imagepipe-tmp");
    let started = std::time::Instant::now();
    let writing = || {
        std::fs::read_dir(&tmp).is_ok_and(|d| {
            d.flatten()
                .any(|e| e.metadata().is_ok_and(|m| m.len() > 64 << 10))
        })
    };
    while !writing() {
        assert!(started.elapsed().as_secs() < 60, "packaging never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    change(child.id());
    let out = child.wait_with_output().unwrap();
    crate::common::Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_disk_that_changes_while_it_is_packaged_is_not_tagged() {
    let ws = Workspace::with_catalog(&catalog("disk.raw", "containerdisk").replace(
        "    format: containerdisk\n",
        "    format: containerdisk\n    compression: \"gzip:9\"\n",
    ));
    let disk = ws.write("disk.raw", words(64 << 20));
    // Truncated: the tar header already says 64 MiB.
    let out = change_while_packaging(&ws, |_| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
    });
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("changed while it was packaged") && out.stderr.contains("67108864"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    let index = ws.path().join(".imagepipe/store/vm/index.json");
    assert!(
        !std::fs::read_to_string(&index)
            .unwrap_or_default()
            .contains("ref.name")
    );

    // Same size, other bytes further on: not what the recipe was computed from.
    ws.write("disk.raw", words(64 << 20));
    let out = change_while_packaging(&ws, |_| {
        use std::io::{Seek, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.seek(std::io::SeekFrom::Start(48 << 20)).unwrap();
        f.write_all(b"another block of the disk").unwrap();
    });
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("the recipe was computed from sha256:"),
        "{}",
        out.stderr
    );
    assert!(
        !std::fs::read_to_string(&index)
            .unwrap_or_default()
            .contains("ref.name")
    );
    // Left alone, the same file builds.
    let mut c = ws.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
}

/// Ctrl-C while a layer is being written removes that temporary blob (it
/// is as large as the disk): the store holds no partial file afterwards,
/// and no tag.
#[test]
fn an_interrupted_build_removes_the_blob_it_was_writing() {
    let ws = Workspace::with_catalog(&catalog("disk.raw", "containerdisk").replace(
        "    format: containerdisk\n",
        "    format: containerdisk\n    compression: \"gzip:9\"\n",
    ));
    ws.write("disk.raw", words(64 << 20));
    let out = change_while_packaging(&ws, |pid| {
        sh("kill", &["-INT", &pid.to_string()], ws.path());
    });
    assert_eq!(out.code, 130, "{}", out.stderr);
    let tmp = ws.path().join(".imagepipe/store/vm/.imagepipe-tmp");
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("blob-"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
    let index = ws.path().join(".imagepipe/store/vm/index.json");
    assert!(
        !std::fs::read_to_string(&index)
            .unwrap_or_default()
            .contains("ref.name")
    );
}

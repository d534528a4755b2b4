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

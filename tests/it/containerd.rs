//! containerd as an independent reader: a `ctr` from Debian, with its own
//! containerd (root, state and socket in a temp dir, the `native`
//! snapshotter), imports and unpacks what imagepipe writes — containerDisks,
//! and root filesystems whose hard links GNU tar stored in any order.

use std::process::{Child, Command, Stdio};

use crate::common::{Workspace, qcow2, run, sh};

pub struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let config = d.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.snapshotter.v1.btrfs\", \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.overlayfs\"]\n[grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n",
                root = d.join("root").display(),
                state = d.join("state").display(),
                sock = d.join("c.sock").display(),
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("containerd is installed (scripts/test.sh installs it)");
        for _ in 0..200 {
            if d.join("c.sock").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Self { dir, child }
    }

    fn ctr(&self, args: &[&str]) -> crate::common::Output {
        let mut c = assert_cmd::Command::new("ctr");
        c.arg("--address")
            .arg(self.dir.path().join("c.sock"))
            .args(["--namespace", "imagepipe-test"])
            .args(args);
        run(c)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ctr images import` of a layout (as an OCI archive), unpacked with the
/// native snapshotter; returns the image names containerd gave.
pub fn import(ctr: &Containerd, ws: &Workspace, layout: &std::path::Path) -> Vec<String> {
    let archive = ws.path().join("archive.tar");
    sh(
        "tar",
        &[
            "-cf",
            archive.to_str().unwrap(),
            "-C",
            layout.to_str().unwrap(),
            ".",
        ],
        ws.path(),
    );
    let out = ctr.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "native",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "ctr import: {}{}", out.stdout, out.stderr);
    let list = ctr.ctr(&["images", "ls", "-q"]);
    list.stdout.lines().map(str::to_owned).collect()
}

#[test]
fn containerd_imports_and_unpacks_what_imagepipe_writes() {
    let ctr = Containerd::start();
    // A containerDisk, with its provenance attestation in the layout.
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: vm\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n",
    );
    qcow2(&ws, "disk.qcow2", "8M");
    let mut c = ws.cmd();
    c.arg("build");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tag = out.stdout.split_whitespace().nth(1).unwrap().to_owned();
    let names = import(&ctr, &ws, &ws.path().join(".imagepipe/store/vm"));
    assert!(
        names.contains(&format!("imagepipe.local/vm:{tag}")),
        "{names:?}"
    );
    assert!(
        names.contains(&"imagepipe.local/vm:latest".to_owned()),
        "{names:?}"
    );
    // A root filesystem whose hard link GNU tar stored after its target,
    // which sorts first.
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: root\n    os: { distro: x, version: \"1\" }\n    source: { file: root.tar }\n    format: rootfs\n",
    );
    let r = ws.path().join("r");
    std::fs::create_dir_all(r.join("bin")).unwrap();
    std::fs::write(r.join("bin/hi2"), b"hi\n").unwrap();
    std::fs::hard_link(r.join("bin/hi2"), r.join("bin/hi")).unwrap();
    sh(
        "tar",
        &["-cf", "root.tar", "-C", "r", "bin/hi2", "bin/hi"],
        ws.path(),
    );
    let mut c = ws.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
    let names = import(&ctr, &ws, &ws.path().join(".imagepipe/store/root"));
    assert!(
        names.contains(&"imagepipe.local/root:latest".to_owned()),
        "{names:?}"
    );
    let snaps = ctr.ctr(&["snapshots", "--snapshotter", "native", "ls"]);
    assert!(snaps.stdout.contains("Committed"), "{}", snaps.stdout);
}

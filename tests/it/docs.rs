//! The commands shown in README.md and docs/*.md run as written.

use std::path::{Path, PathBuf};

use crate::common::{Workspace, git, qcow2, run};

/// Every `imagepipe …` line of the `sh` code blocks, with its file.
fn documented_commands(root: &Path) -> Vec<(String, String)> {
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut shell = false;
        for line in text.lines() {
            if let Some(lang) = line.strip_prefix("```") {
                shell = !shell && matches!(lang.trim(), "sh" | "bash" | "shell");
                continue;
            }
            if shell && line.trim_start().starts_with("imagepipe ") {
                let name = file.strip_prefix(root).unwrap().display().to_string();
                found.push((name, line.trim().to_owned()));
            }
        }
    }
    found
}

/// The arguments of a documented line: comment and redirection dropped,
/// absolute directories moved into the workspace (and created).
fn arguments(line: &str, ws: &Workspace) -> Vec<String> {
    let line = line.split(" # ").next().unwrap();
    let line = line.split(" > ").next().unwrap();
    let mut args: Vec<String> = line.split_whitespace().skip(1).map(str::to_owned).collect();
    for i in 1..args.len() {
        if args[i - 1] == "--dir" || args[i - 1] == "--metadata-file" {
            let rel = args[i].trim_start_matches('/').to_owned();
            let dir = if args[i - 1] == "--dir" {
                ws.path().join(&rel)
            } else {
                ws.path().join(&rel).parent().unwrap().to_path_buf()
            };
            std::fs::create_dir_all(dir).unwrap();
            args[i] = rel;
        }
    }
    args
}

#[test]
fn every_documented_command_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let commands = documented_commands(root);
    assert!(commands.len() > 20, "{commands:?}");
    // The docs' example names, on the local layout store only: nothing
    // leaves this machine.
    let ws = Workspace::with_catalog(
        "version: 1\ntargets:\n  - { name: local, layout: ./.imagepipe/store }\nvariables:\n  runc: \"1.2.6\"\n  containerd: \"2.0.4\"\nimages:\n  - name: vm-ubuntu-2404\n    os: { distro: ubuntu, version: \"24.04\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n  - name: node\n    kubernetes: true\n    os: { distro: ubuntu, version: \"24.04\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n    tags: [\"{name}-{kubernetes}-{hash}\"]\nretention:\n  keep_last: 3\n  git: { repo: ., branches: [\"release-*\"], paths: [\"**/*.yml\"] }\n",
    );
    qcow2(&ws, "disk.qcow2", "4M");
    // The example catalogs, for the lines that name them.
    crate::common::sh(
        "cp",
        &[
            "-r",
            root.join("examples").to_str().unwrap(),
            ws.path().to_str().unwrap(),
        ],
        ws.path(),
    );
    git(ws.path(), &["init", "-q", "-b", "main"]);
    git(ws.path(), &["add", "-A"]);
    git(ws.path(), &["commit", "-qm", "catalog"]);
    git(ws.path(), &["branch", "release-1.33"]);
    // The release the docs' release notes describe has been published.
    let mut c = ws.cmd();
    c.args(["publish", "--release", "v1.33.6"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut failures = Vec::new();
    for (file, line) in &commands {
        let mut c = ws.cmd();
        c.args(arguments(line, &ws))
            .env("SOURCE_DATE_EPOCH", "1700000000");
        if line.contains("in a tag pipeline") {
            c.env("CI_COMMIT_TAG", "v1.33.6");
        }
        let out = run(c);
        // Only a target the test catalog does not have may be refused.
        let expected = if line.contains("--target quay") { 2 } else { 0 };
        if out.code != expected {
            failures.push(format!(
                "{file}: `{line}` exited {} (expected {expected}):\n{}",
                out.code, out.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

//! `imagepipe validate`: every problem, located, with a fix; exit 2; never a panic.

use crate::common::{Workspace, basic_catalog, run};

#[test]
fn a_valid_catalog_passes() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let out = run({
        let mut c = ws.cmd();
        c.arg("validate");
        c
    });
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("images.yml: ok (2 images, 2 targets)"),
        "{}",
        out.stdout
    );
}

fn validate(text: &str) -> crate::common::Output {
    let ws = Workspace::with_catalog(text);
    let mut c = ws.cmd();
    c.arg("validate");
    run(c)
}

const BAD: &str = r#"version: 1
targets:
  - name: a
    registry: http://127.0.0.1:5000
  - name: a
    layuot: x
images:
  - name: Ubuntu
    os: { distro: ubuntu, version: "22.04" }
    source: { url: https://x/y.img }
    format: containerdsk
    tags: ["{name}-{nmae}", "lat+est"]
  - name: k
    kubernetes: true
    os: { distro: ubuntu, version: "22.04" }
    source: { file: x.img }
    format: rootfs
    tags: ["{name}-{kubernetes}", "{name}-{hash}"]
    foo: 1
  - name: k
    os: { distro: ubuntu, version: "22.04" }
    source: { file: x.img }
    format: rootfs
    tags: ["{kubernetes}-{hash}"]
retention:
  max_age: 30x
  protect: ["[abc"]
"#;

#[test]
fn every_problem_is_reported_in_one_run_with_location_and_fix() {
    let out = validate(BAD);
    assert_eq!(out.code, 2);
    let expected = [
        "images.yml:4:15: error: registry `http://127.0.0.1:5000` is plain HTTP — plain HTTP is only allowed with `insecure: true`",
        "images.yml:5:5: error: target `a` is neither a layout nor a registry — add `layout: ./path`, `registry: host[:port]` or `cloud: <provider>` with `region:`",
        "images.yml:5:11: error: duplicate target name `a` — it is first defined at line 3",
        "images.yml:6:5: error: unknown key `layuot` in a target — did you mean `layout`?",
        "images.yml:8:11: error: image name `Ubuntu` is not a valid OCI repository name",
        "images.yml:10:20: error: a `url` source needs a checksum — add `sha256: <64 hex>`",
        "images.yml:11:13: error: unknown format `containerdsk` — did you mean `containerdisk`?",
        "images.yml:12:12: error: tag template `{name}-{nmae}`: unknown placeholder `{nmae}` — did you mean `name`?",
        "images.yml:12:29: error: tag template `lat+est` renders to an invalid tag",
        "images.yml:18:12: error: the immutable tag `{name}-{kubernetes}` does not contain `{hash}`",
        "images.yml:19:5: error: unknown key `foo` in an image — expected one of: name, os, source",
        "images.yml:20:11: error: duplicate image name `k` — it is first defined at line 13",
        "images.yml:24:12: error: tag `{kubernetes}-{hash}` uses `{kubernetes}` but image `k` is not built per release",
        "images.yml:26:12: error: `30x` is not a duration",
        "images.yml:27:13: error: `[abc` is not a valid glob",
    ];
    for e in expected {
        assert!(out.stderr.contains(e), "missing `{e}` in:\n{}", out.stderr);
    }
    assert!(
        out.stderr
            .contains("images.yml: 15 problem(s); nothing was done"),
        "{}",
        out.stderr
    );
}

#[test]
fn release_images_must_tell_releases_apart() {
    let text = basic_catalog().replace("{name}-{kubernetes}-{hash}", "{name}-{hash}");
    let out = validate(&text);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("does not contain `{kubernetes}`"),
        "{}",
        out.stderr
    );
}

#[test]
fn json_output_lists_diagnostics() {
    let ws = Workspace::with_catalog(BAD);
    let mut c = ws.cmd();
    c.args(["validate", "--format", "json"]);
    let out = run(c);
    assert_eq!(out.code, 2);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["valid"], false);
    let first = &v["diagnostics"][0];
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(4), Some(15))
    );
    assert!(first["help"].as_str().unwrap().contains("insecure: true"));
}

#[test]
fn duplicate_keys_and_missing_keys() {
    let out = validate("version: 1\nversion: 1\n");
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("images.yml:2:1: error: duplicate key `version`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("missing key `images`"),
        "{}",
        out.stderr
    );
}

#[test]
fn wrong_types_are_located() {
    let text = basic_catalog()
        .replace("version: 1\n", "version: one\n")
        .replace("insecure: true", "insecure: \"yes\"");
    let out = validate(&text);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("images.yml:1:10: error: expected a whole number, found `one`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("expected `true` or `false`"),
        "{}",
        out.stderr
    );
}

#[test]
fn other_semantic_checks() {
    let text = basic_catalog()
        .replace("namespace: ci", "namespace: CI")
        .replace("format: containerdisk\n  - name: node", "format: containerdisk\n    targets: [prod]\n    tags: [\"{name}-{hash:99}\", \"{runc}-{fo}\"]\n  - name: node");
    let out = validate(&text);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for e in [
        "namespace `CI` of target `dev` is not a valid repository path",
        "image `ubuntu-2204` names unknown target `prod`",
        "`{hash:99}`: the length must be a number from 1 to 64",
        "unknown placeholder `{fo}`",
    ] {
        assert!(out.stderr.contains(e), "missing `{e}` in:\n{}", out.stderr);
    }
}

#[test]
fn placeholders_need_their_variables() {
    let text = basic_catalog()
        .replace(
            "variables:\n  runc:       { default: \"1.2.6\", env: RUNC_VERSION }\n",
            "variables:\n",
        )
        .replace("\"{kubernetes_series}-latest\"", "\"runc-{runc}\"");
    let out = validate(&text);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("`{runc}` has no value: the catalog has no `runc` variable"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "empty",
            b"".to_vec(),
            "images.yml:1:1: error: the catalog is empty",
        ),
        (
            "comments only",
            b"# nothing\n".to_vec(),
            "the catalog is empty",
        ),
        (
            "malformed",
            b"version: 1\nimages: [\n".to_vec(),
            "error: invalid YAML",
        ),
        (
            "tabs",
            b"version: 1\nimages:\n\t- name: x\n".to_vec(),
            "must use spaces, not tabs",
        ),
        (
            "a tab after a line",
            b"version: 1\nimages:\n  - name: a\n\tos: { distro: x, version: \"1\" }\n".to_vec(),
            "images.yml:4:1: error: invalid YAML: while scanning a plain scalar, found a tab",
        ),
        (
            "not utf-8",
            b"version: 1\n# caf\xe9\n".to_vec(),
            "images.yml:2:6: error: the catalog is not valid UTF-8",
        ),
        (
            "a list",
            b"- a\n- b\n".to_vec(),
            "the catalog must be a mapping, found a list",
        ),
        (
            "a scalar",
            b"hello\n".to_vec(),
            "the catalog must be a mapping, found a scalar",
        ),
        (
            "two documents",
            b"version: 1\n---\nversion: 1\n".to_vec(),
            "a catalog is a single YAML document",
        ),
        ("unknown anchor", b"version: *x\n".to_vec(), "invalid YAML"),
        (
            "future version",
            b"version: 2\nimages: []\n".to_vec(),
            "unsupported catalog version 2",
        ),
    ];
    for (what, bytes, expected) in cases {
        let ws = Workspace::new();
        ws.write("images.yml", &bytes);
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{what}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{what}: expected `{expected}` in:\n{}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{what}: {}", out.stderr);
    }
}

#[test]
fn unreadable_paths_and_huge_files() {
    let ws = Workspace::new();
    std::fs::create_dir(ws.path().join("dir.yml")).unwrap();
    std::os::unix::fs::symlink("loop.yml", ws.path().join("loop.yml")).unwrap();
    let huge = ws.write("huge.yml", vec![b'#'; 9 << 20]);
    let cases = [
        ("dir.yml", "the catalog path is a directory"),
        (
            "missing.yml",
            "cannot read the catalog: no such file or directory",
        ),
        ("loop.yml", "cannot read the catalog"),
        (huge.to_str().unwrap(), "more than the 8388608-byte limit"),
    ];
    for (path, expected) in cases {
        let mut c = ws.cmd();
        c.args(["validate", "-c", path]);
        let out = run(c);
        assert_eq!(out.code, 2, "{path}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{path}: expected `{expected}` in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn default_catalog_is_images_yml_in_the_working_directory() {
    let ws = Workspace::new();
    let mut c = ws.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("images.yml:1:1: error: cannot read the catalog"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("-c path/to/images.yml"),
        "{}",
        out.stderr
    );
}

/// A kilobyte of nested aliases ("billion laughs") would expand to
/// gigabytes: it is refused with exit 2 before it is expanded.
#[test]
fn alias_bombs_are_refused() {
    let mut text = String::from(
        "version: 1\nx0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for i in 1..=9 {
        let p = i - 1;
        text.push_str(&format!(
            "x{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    text.push_str("images: []\n");
    let ws = Workspace::with_catalog(&text);
    let mut c = ws.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("aliases expand to more than"),
        "{}",
        out.stderr
    );
    // Ordinary aliases still work.
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: a\n    os: &os { distro: ubuntu, version: \"24.04\" }\n    source: { file: a.qcow2 }\n    format: containerdisk\n  - name: b\n    os: *os\n    source: { file: b.qcow2 }\n    format: containerdisk\n",
    );
    let mut c = ws.cmd();
    c.arg("validate");
    assert_eq!(run(c).code, 0);
}

/// Deep nesting, block or flow, is refused with exit 2, never a crash.
#[test]
fn deep_nesting_is_refused_not_a_crash() {
    for text in [
        "- ".repeat(200_000) + "a\n",
        "x: ".to_owned() + &"[".repeat(200_000),
        (0..300)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect(),
    ] {
        let ws = Workspace::with_catalog(&text);
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(
            out.stderr.contains("nested more than 256 levels")
                || out.stderr.contains("recursion limit"),
            "{}",
            out.stderr
        );
    }
}

/// Each `(line, text)`: an error on that line of images.yml saying that.
fn errors_at(out: &crate::common::Output, expected: &[(u32, &str)]) {
    assert_eq!(out.code, 2, "{}", out.stderr);
    for (line, text) in expected {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(&format!("images.yml:{line}:")) && l.contains(text)),
            "line {line}: {text}\n{}",
            out.stderr
        );
    }
}

#[test]
fn a_runtime_config_belongs_to_rootfs_images_and_is_checked() {
    let out = validate(
        "version: 1\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: d.qcow2 }\n    format: containerdisk\n    config: { cmd: [/bin/sh] }\n  - name: tools\n    os: { distro: x, version: \"1\" }\n    source: { file: rootfs/ }\n    format: rootfs\n    config:\n      env: { 1PATH: /bin }\n      entrypoint: /bin/sh -c\n      cwd: /\n",
    );
    errors_at(
        &out,
        &[
            (
                7,
                "`config` only applies to a `format: rootfs` image `disk`",
            ),
            (13, "`1PATH` is not an environment variable name"),
            (14, "expected a list"),
            (15, "unknown key `cwd`"),
        ],
    );
}

#[test]
fn verification_settings_are_checked() {
    let out = validate(
        "version: 1\nvariables:\n  runc: \"1.2.6\"\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: d.qcow2 }\n    format: containerdisk\n    verify:\n      timeout: soon\n      memory: 64MiB\n      firmware: efi\n      checks:\n        - run: runc --version\n          expect: \"{rnuc}\"\n        - run: kubeadm version\n          expect: \"{kubernetes}\"\n        - expect: x\n  - name: tools\n    os: { distro: x, version: \"1\" }\n    source: { file: rootfs/ }\n    format: rootfs\n    verify: { required: true }\n",
    );
    errors_at(
        &out,
        &[
            (10, "`soon` is not a duration"),
            (11, "`64MiB` is not a guest memory size"),
            (12, "unknown firmware `efi`"),
            (15, "did you mean `runc`?"),
            (17, "is not built per release"),
            (18, "missing key `run`"),
            (23, "`verify` boots disk images"),
        ],
    );
}

/// A reader that goes away (`imagepipe completions bash | head -1`) ends
/// the output, never a panic, for every command that prints.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let ws = Workspace::with_catalog(&basic_catalog());
    for args in [
        &["completions", "bash"][..],
        &["schema"],
        &["schema", "--output", "plan"],
        &["plan", "--offline", "--format", "json"],
        &["validate"],
    ] {
        let mut c = ws.process();
        c.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        // Closed before the command writes anything.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// A result that cannot be written (`> plan.json` on a full disk) fails
/// the run, saying so: never a truncated file and exit 0.
#[test]
fn a_stdout_that_cannot_be_written_fails_the_run() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = ws
        .process()
        .args(["plan", "--offline", "--format", "json"])
        .stdout(full)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
}

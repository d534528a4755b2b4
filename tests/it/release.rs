//! Release tags through the CLI: `--release`, CI variables, clear rejections.

use crate::common::{Workspace, basic_catalog, run};

fn plan_json(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c)
}

#[test]
fn accepted_tags_derive_the_kubernetes_version() {
    let ws = Workspace::with_catalog(&basic_catalog());
    for (tag, k8s) in [
        ("v1.33.6", "v1.33.6"),
        ("v1.34.0-rc.1", "v1.34.0-rc.1"),
        ("v1.33.6/runc-1.2.6", "v1.33.6"),
    ] {
        let out = plan_json(&ws, &["--release", tag], &[]);
        assert_eq!(out.code, 0, "{tag}: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["release"], tag);
        let item = &v["items"][0];
        assert_eq!(item["kubernetes"], k8s);
        let tag_out = item["tag"].as_str().unwrap();
        assert!(
            tag_out.starts_with(&format!("node-ubuntu-2404-{k8s}-")),
            "{tag_out}"
        );
        let series = &k8s[..5];
        assert_eq!(item["mutable_tags"][0], format!("{series}-latest"));
    }
}

#[test]
fn malformed_tags_exit_2_naming_the_tag_and_the_fix() {
    let ws = Workspace::with_catalog(&basic_catalog());
    for bad in [
        "1.33.6",
        "v1.33",
        "v1.33.x",
        "v1.33.6/",
        "../x",
        "v1.33.6/../x",
        "v1.33.6 x",
        "v1.33.6+meta",
    ] {
        let out = plan_json(&ws, &["--release", bad], &[]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(
            out.stderr.contains("invalid release tag"),
            "{bad}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("e.g. `v1.33.6`"),
            "{bad}: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{bad}: nothing on stdout");
    }
}

#[test]
fn ci_variables_give_the_release_tag() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v1.33.6/runc-1.2.6")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"release\": \"v1.33.6/runc-1.2.6\""));
    let out = plan_json(
        &ws,
        &[],
        &[("GITHUB_REF_NAME", "v1.34.1"), ("GITHUB_REF_TYPE", "tag")],
    );
    assert!(
        out.stdout.contains("\"release\": \"v1.34.1\""),
        "{}",
        out.stdout
    );
    // A branch build on GitHub is not a release.
    let out = plan_json(
        &ws,
        &[],
        &[("GITHUB_REF_NAME", "main"), ("GITHUB_REF_TYPE", "branch")],
    );
    assert!(out.stdout.contains("\"release\": null"), "{}", out.stdout);
    // A malformed tag from CI is an error too, and --release wins over CI.
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v1.33")]);
    assert_eq!(out.code, 2);
    let out = plan_json(
        &ws,
        &["--release", "v1.33.7"],
        &[("CI_COMMIT_TAG", "v1.33")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

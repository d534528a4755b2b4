//! Release tags through the CLI: `--release`, CI variables, clear rejections.

use crate::common::{Workspace, basic_catalog, run};

fn plan_json(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> crate::common::Output {
    let mut c = ws.cmd();
    // The catalog's registry is not running: its state is a warning here.
    c.args(["plan", "--format", "json", "--allow-unknown"])
        .args(args);
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
        // On stdout, only the error object: no plan.
        let v = crate::json_contract::validated(&ws, "error", &out.stdout);
        assert_eq!(v["error"]["kind"], "invalid", "{bad}: {v}");
        assert!(v.get("items").is_none(), "{bad}: {v}");
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
    // A CI tag that does not parse is not a release, and says so; one
    // that names a pre-release wrongly is an error; --release wins over CI.
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v1.33")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"release\": null"), "{}", out.stdout);
    assert!(
        out.stderr.contains("the CI tag `v1.33` is not a release"),
        "{}",
        out.stderr
    );
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v1.33.6-rc1")]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("looks like a pre-release"),
        "{}",
        out.stderr
    );
    let out = plan_json(
        &ws,
        &["--release", "v1.33.7"],
        &[("CI_COMMIT_TAG", "v1.33")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A `command` builder of a `kubernetes: true` image that records what it
/// was told of the release, and writes a small disk.
fn recording_catalog(prefix: &str) -> String {
    format!(
        "version: 1\n{prefix}variables:\n  runc: {{ default: \"1.2.9\", env: RUNC_VERSION }}\nimages:\n  - name: node\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    kubernetes: true\n    source:\n      command:\n        run: [sh, -c, 'env | grep ^KUBERNETES_ | sort > facts; truncate -s 1M \"$IMAGEPIPE_OUTPUT_DIR/disk.raw\"']\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\", \"{{kubernetes_series}}-latest\"]\n"
    )
}

#[test]
fn outscale_tags_are_releases_with_a_comment_not_pre_releases() {
    let ws = Workspace::with_catalog(&recording_catalog(""));
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v1.33.6-runc-v1.2.9")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["release"], "v1.33.6-runc-v1.2.9");
    let item = &v["items"][0];
    assert_eq!(item["kubernetes"], "v1.33.6");
    // Not a pre-release: the series tag moves.
    assert_eq!(item["tags"][0]["tag"], "v1.33-latest");
    assert_eq!(item["tags"][0]["action"], "move", "{item}");
    // The builder gets the Kubernetes version, not the comment.
    let mut c = ws.cmd();
    c.args(["build", "--release", "v1.33.6-runc-v1.2.9"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // (It runs in the catalog's directory.)
    let facts = std::fs::read_to_string(ws.path().join("facts")).unwrap();
    assert!(facts.contains("KUBERNETES_SEMVER=v1.33.6\n"), "{facts}");
    assert!(
        facts.contains("KUBERNETES_DEB_VERSION=1.33.6-1.1\n"),
        "{facts}"
    );
    // A release candidate with a comment, and a malformed one.
    let out = plan_json(&ws, &["--release", "v1.35.0-rc.1"], &[]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["kubernetes"], "v1.35.0-rc.1");
    assert_eq!(v["items"][0]["tags"][0]["action"], "hold");
    let out = plan_json(&ws, &["--release", "v1.33.6-rc1"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("`-rc1` looks like a pre-release"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tag_prefix_says_which_ci_tags_are_releases() {
    let ws = Workspace::with_catalog(&recording_catalog("release: { tag_prefix: \"k8s-\" }\n"));
    // The provider's own tag: not a release, one info line, branch behaviour.
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v0.4.0")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"release\": null"), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("does not start with the catalog's `release.tag_prefix` `k8s-`"),
        "{}",
        out.stderr
    );
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "k8s-v1.33.6-runc-v1.2.9")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["kubernetes"], "v1.33.6");
    // --release takes the tag with or without the prefix, and must parse.
    for tag in ["k8s-v1.33.6", "v1.33.6"] {
        let out = plan_json(&ws, &["--release", tag], &[]);
        assert_eq!(out.code, 0, "{tag}: {}", out.stderr);
        // The release is named by the tag as given.
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(v["release"], tag);
    }
    let out = plan_json(&ws, &["--release", "k8s-k8s-v1.33.6"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("`k8s-k8s-v1.33.6`"), "{}", out.stderr);
    // A prefix that would swallow the version's `v` is refused.
    let bad = Workspace::with_catalog(&recording_catalog("release: { tag_prefix: \"v\" }\n"));
    let mut c = bad.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("ending before the version's `v`"),
        "{}",
        out.stderr
    );
    let out = plan_json(&ws, &["--release", "k8s-1.33"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // --no-release ignores the CI tag.
    let out = plan_json(&ws, &["--no-release"], &[("CI_COMMIT_TAG", "k8s-v1.33.6")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"release\": null"), "{}", out.stdout);
}

#[test]
fn a_catalog_without_release_images_ignores_ci_tags() {
    // Kubespray's own release tag, on its CI-disk catalog.
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: vm\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.qcow2 }\n    format: containerdisk\n",
    );
    crate::common::qcow2(&ws, "disk.qcow2", "4M");
    let out = plan_json(&ws, &[], &[("CI_COMMIT_TAG", "v2.27.0")]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("\"image\": \"vm\""), "{}", out.stdout);
    assert!(
        out.stderr.contains("no `kubernetes: true` image"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_comment_that_contradicts_a_variable_warns_and_strict_refuses_it() {
    let ws = Workspace::with_catalog(&recording_catalog(""));
    let out = plan_json(&ws, &["--release", "v1.33.6-runc-v1.2.7"], &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("names runc 1.2.7, but runc is 1.2.9 (from `RUNC_VERSION`"),
        "{}",
        out.stderr
    );
    let out = plan_json(&ws, &["--release", "v1.33.6-runc-v1.2.7", "--strict"], &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    // The variable set as the tag says: no word.
    let out = plan_json(
        &ws,
        &["--release", "v1.33.6-runc-v1.2.7", "--strict"],
        &[("RUNC_VERSION", "1.2.7")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("names runc"), "{}", out.stderr);
}

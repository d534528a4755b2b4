//! Cleanup cannot lose what a supported branch uses: checkouts as CI
//! runners make them, child digests, image names with `/`, listings that
//! lie, hand-made tags, references in prose, and tags pushed during apply.
//! Against the real Distribution registry (and a listing-fault proxy where
//! it cannot misbehave on demand) and real git clones.

use serde_json::Value;

use crate::cleanup::{
    OLD, catalog, cleanup, decision, exists, git_repo, keep_last_one_plan, publish_version,
};
use crate::common::{Workspace, git, run, sh, skopeo_pull};
use crate::fault_proxy::{Fault, FaultProxy};
use crate::registry_fixture::Registry;

const RULES: &str = "  keep_last: 1\n  max_age: 30d\n  protect: [latest]\n  max_delete: 20\n  git:\n    repo: runner\n    branches: [\"release-*\"]\n    supported_releases: 2\n    paths: [\"tests/**/*.yml\"]\n";

/// `runner/`: an empty clone of `k8s-ci` with every branch fetched as
/// `refs/remotes/origin/*`, as CI runners fetch.
fn runner_fetch(ws: &Workspace) -> std::path::PathBuf {
    let runner = ws.path().join("runner");
    std::fs::create_dir_all(&runner).unwrap();
    git(&runner, &["init", "-q"]);
    git(&runner, &["remote", "add", "origin", "../k8s-ci"]);
    git(
        &runner,
        &[
            "fetch",
            "-q",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
        ],
    );
    runner
}

/// `runner/`: a clone of `k8s-ci` made the way a GitLab runner makes it
/// (`git init`, fetch every branch as remote-tracking refs, detached HEAD).
fn gitlab_checkout(ws: &Workspace) {
    let runner = runner_fetch(ws);
    let sha = git(&runner, &["rev-parse", "refs/remotes/origin/release-2.27"]);
    git(&runner, &["checkout", "-q", "--detach", sha.trim()]);
}

/// `runner/`: as `actions/checkout` with `fetch-depth: 0` makes it: every
/// branch as `refs/remotes/origin/*`, HEAD on a local branch of the one built.
fn github_checkout(ws: &Workspace) {
    let runner = runner_fetch(ws);
    git(
        &runner,
        &[
            "checkout",
            "-q",
            "-B",
            "release-2.27",
            "refs/remotes/origin/release-2.27",
        ],
    );
}

fn cleanup_env(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> (i32, Value, String) {
    let mut c = ws.cmd();
    c.args(["cleanup", "--format", "json"])
        .args(args)
        .env_remove("CI_DEFAULT_BRANCH");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run(c);
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.code, v, out.stderr)
}

#[test]
fn a_detached_checkout_fails_closed_until_the_default_branch_is_known() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, RULES));
    let v: Vec<(String, String)> = (1..=3)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    // Only main references v1.
    git_repo(
        &ws,
        &[
            (
                "main",
                &format!("vm: registry.example.com/ci/disk:{}\n", v[0].0),
            ),
            ("release-2.27", "vm: none\n"),
        ],
    );
    gitlab_checkout(&ws);
    let (code, plan, stderr) = cleanup_env(&ws, &["--apply"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("default branch") && stderr.contains("CI_DEFAULT_BRANCH"),
        "{stderr}"
    );
    assert_eq!(plan["applied"], serde_json::json!([]), "{plan}");
    for (tag, _) in &v {
        assert!(exists(&reg.addr, tag), "{tag} survived a failed run");
    }
    // GitLab sets CI_DEFAULT_BRANCH: main's reference keeps v1.
    let (code, plan, stderr) = cleanup_env(&ws, &["--apply"], &[("CI_DEFAULT_BRANCH", "main")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        decision(&plan, &v[0].0)["referenced_by"],
        serde_json::json!(["main:tests/ci.yml"])
    );
    assert!(exists(&reg.addr, &v[0].0));
    assert!(!exists(&reg.addr, &v[1].0), "v2 is expired");
    assert!(exists(&reg.addr, &v[2].0), "v3 is the newest");
    // A default branch that was not fetched is an error too.
    let (code, _, stderr) = cleanup_env(&ws, &[], &[("CI_DEFAULT_BRANCH", "trunk")]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("`trunk`") && stderr.contains("git fetch"),
        "{stderr}"
    );
}

#[test]
fn a_github_checkout_reads_the_default_branch_it_is_given() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, RULES));
    let v: Vec<(String, String)> = (1..=2)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    git_repo(
        &ws,
        &[
            ("main", &format!("vm: ci/disk:{}\n", v[0].0)),
            ("release-2.27", "vm: none\n"),
        ],
    );
    github_checkout(&ws);
    // HEAD names release-2.27: without being told, cleanup would take it
    // for the default branch. The workflow passes the repository's default.
    let (code, plan, stderr) = cleanup_env(&ws, &[], &[("CI_DEFAULT_BRANCH", "main")]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        decision(&plan, &v[0].0)["reasons"],
        serde_json::json!(["referenced"])
    );
}

#[test]
fn names_with_slashes_prose_children_and_hand_made_tags_are_kept() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: tools/disk\n    os: {{ distro: x, version: \"1\" }}\n    platforms:\n      - {{ platform: linux/amd64, source: {{ file: amd64.raw }} }}\n      - {{ platform: linux/arm64, source: {{ file: arm64.raw }} }}\n    format: containerdisk\n    compression: none\n    tags: [\"disk-{{hash}}\", latest]\nretention:\n  keep_last: 1\n  max_delete: 20\n  git:\n    repo: k8s-ci\n    default_branch: main\n    branches: [\"release-*\"]\n    paths: [\"**/*.md\", \"**/*.yml\"]\n",
        reg.addr
    ));
    let publish = |n: u8, epoch: i64| -> (String, String) {
        ws.write("amd64.raw", vec![n; 4096]);
        ws.write("arm64.raw", vec![n + 100; 4096]);
        let mut c = ws.cmd();
        c.args(["publish", "--format", "json"])
            .env("SOURCE_DATE_EPOCH", epoch.to_string());
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        (
            v["items"][0]["tag"].as_str().unwrap().to_owned(),
            v["items"][0]["digest"].as_str().unwrap().to_owned(),
        )
    };
    let v: Vec<(String, String)> = (1..=5).map(|n| publish(n, OLD + i64::from(n))).collect();
    let repo = format!("{}/ci/tools/disk", reg.addr);
    let raw = |r: &str| -> Value {
        serde_json::from_str(&sh(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ],
            ws.path(),
        ))
        .unwrap()
    };
    // main pins v1's amd64 child by digest; a README names v2 in a sentence;
    // release-2.27 names v3 with its full path; someone tagged v4 by hand.
    let child = raw(&format!("{repo}:{}", v[0].0))["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    sh(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{repo}:{}", v[3].0),
            &format!("docker://{repo}:release-2.27-backup1"),
        ],
        ws.path(),
    );
    let k8s = ws.path().join("k8s-ci");
    std::fs::create_dir_all(k8s.join("tests")).unwrap();
    git(&k8s, &["init", "-q"]);
    git(&k8s, &["checkout", "-q", "-b", "main"]);
    std::fs::write(
        k8s.join("tests/ci.yml"),
        format!("vm: {}/ci/tools/disk@{child}\n", "registry.example.com"),
    )
    .unwrap();
    std::fs::write(
        k8s.join("README.md"),
        format!(
            "The known good disk is registry.example.com/ci/tools/disk:{}.\n",
            v[1].0
        ),
    )
    .unwrap();
    git(&k8s, &["add", "-A"]);
    git(&k8s, &["commit", "-qm", "main"]);
    git(&k8s, &["checkout", "-q", "-b", "release-2.27"]);
    std::fs::write(
        k8s.join("tests/ci.yml"),
        format!("vm: \"quay.io/mirror/ci/tools/disk:{}\"\n", v[2].0),
    )
    .unwrap();
    git(&k8s, &["commit", "-qam", "release"]);
    let (code, plan, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    for (i, why) in [
        (0, "referenced"),
        (1, "referenced"),
        (2, "referenced"),
        (4, "recent"),
    ] {
        let d = decision(&plan, &v[i].0);
        assert!(
            d["reasons"].as_array().unwrap().contains(&Value::from(why)),
            "v{}: {d}",
            i + 1
        );
    }
    assert_eq!(
        decision(&plan, "release-2.27-backup1")["reasons"],
        serde_json::json!(["unmanaged"])
    );
    assert_eq!(decision(&plan, &v[3].0)["decision"], "delete");
    // After garbage collection, the pinned child and every kept image pull
    // in full. (Distribution 2.x's `--delete-untagged` would remove index
    // children whatever keeps the index: docs/cleanup.md says so.)
    let mut reg = reg;
    reg.garbage_collect_keeping_untagged();
    skopeo_pull(&ws, &reg.addr, &format!("ci/tools/disk@{child}"));
    for t in [
        v[0].0.as_str(),
        v[1].0.as_str(),
        v[2].0.as_str(),
        v[4].0.as_str(),
        "release-2.27-backup1",
    ] {
        skopeo_pull(&ws, &reg.addr, &format!("ci/tools/disk:{t}"));
    }
}

#[test]
fn listings_that_repeat_a_page_or_hide_a_tag_cannot_lose_an_image() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 1\n  max_delete: 20\n"));
    let v: Vec<(String, String)> = (1..=3)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    // `latest` also on v1, by hand, after the fact.
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/ci/disk:{}", reg.addr, v[0].0),
            &format!("docker://{}/ci/disk:pinned", reg.addr),
        ],
        ws.path(),
    );
    let all: Vec<String> = serde_json::from_str::<Value>(&sh(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{}/ci/disk", reg.addr),
        ],
        ws.path(),
    ))
    .unwrap()["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let page = |tags: &[String]| serde_json::json!({ "name": "ci/disk", "tags": tags }).to_string();
    let through = |faults: Vec<Fault>| {
        let proxy = FaultProxy::start(&reg.addr, faults);
        let w =
            Workspace::with_catalog(&catalog(&proxy.addr, "  keep_last: 1\n  max_delete: 20\n"));
        let out = cleanup(&w, &["--apply"]);
        (proxy, out)
    };
    // A registry that honours `n` but ignores `last`: page 1 again and again.
    let (_p, (code, out, stderr)) = through(vec![Fault::Respond {
        method: "GET",
        path: "/tags/list",
        status: 200,
        headers: "Link: </v2/ci/disk/tags/list?n=2&last=x>; rel=\"next\"\r\n".into(),
        body: page(&all[..2]).into_bytes(),
        times: 5,
        authorized: false,
    }]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("incomplete"), "{stderr}");
    assert_eq!(out["applied"], serde_json::json!([]));
    // A 5xx in the middle of the listing: nothing judged.
    let (_p, (code, _, stderr)) = through(vec![Fault::Status {
        method: "GET",
        path: "/tags/list",
        status: 500,
        retry_after: None,
        times: 20,
    }]);
    assert_eq!(code, 1, "{stderr}");
    // A listing that hides `pinned`: v1 is planned expired, and its tag
    // goes — but only that tag: `pinned` on the same image survives.
    let shown: Vec<String> = all.iter().filter(|t| *t != "pinned").cloned().collect();
    let (_p, (code, out, stderr)) = through(vec![Fault::Respond {
        method: "GET",
        path: "/tags/list",
        status: 200,
        headers: String::new(),
        body: page(&shown).into_bytes(),
        times: 1,
        authorized: false,
    }]);
    assert_eq!(code, 0, "{stderr}");
    assert!(out["applied"].to_string().contains(&v[0].0), "{out}");
    assert!(!exists(&reg.addr, &v[0].0));
    assert!(
        exists(&reg.addr, "pinned"),
        "a tag the plan never saw is never affected"
    );
    skopeo_pull(&ws, &reg.addr, "ci/disk:pinned");
}

#[test]
fn a_tag_pushed_onto_an_expired_image_during_apply_survives() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 1\n"));
    let (old, old_digest) = publish_version(&ws, 1, OLD);
    publish_version(&ws, 2, OLD + 10);
    let p = keep_last_one_plan(&reg.addr);
    // Between planning and deleting, a job pins the expired image.
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/ci/disk@{old_digest}", reg.addr),
            &format!("docker://{}/ci/disk:pinned-by-a-job", reg.addr),
        ],
        ws.path(),
    );
    let done = p.apply();
    assert!(
        done.iter()
            .any(|a| a.tag == old && a.result == imagepipe::cleanup::Outcome::Untagged),
        "{done:?}"
    );
    assert!(!exists(&reg.addr, &old));
    skopeo_pull(&ws, &reg.addr, "ci/disk:pinned-by-a-job");
}

#[test]
fn globs_that_match_nothing_and_stray_release_branches() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(
        &reg.addr,
        &RULES.replace("repo: runner", "repo: k8s-ci\n    default_branch: main"),
    ));
    let v: Vec<(String, String)> = (1..=4)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    git_repo(
        &ws,
        &[
            ("main", "x: 1\n"),
            ("release-2.27", &format!("vm: disk:{}\n", v[0].0)),
            ("release-2.26", &format!("vm: disk:{}\n", v[1].0)),
            ("release-2027-cleanup-test", "x: 2\n"),
        ],
    );
    // The stray branch does not push release-2.26 out of the two supported.
    let (code, plan, stderr) = cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("release-2027-cleanup-test") && stderr.contains("ignored"),
        "{stderr}"
    );
    assert_eq!(
        decision(&plan, &v[1].0)["reasons"],
        serde_json::json!(["referenced"])
    );
    // A `paths` glob that matches no file: fail closed, nothing deleted.
    let bad = RULES
        .replace("repo: runner", "repo: k8s-ci\n    default_branch: main")
        .replace("tests/**/*.yml", "test/**/*.yaml");
    ws.write("images.yml", catalog(&reg.addr, &bad));
    let (code, out, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("test/**/*.yaml") && stderr.contains("matches no file"),
        "{stderr}"
    );
    assert_eq!(out["applied"], serde_json::json!([]));
    for (tag, _) in &v {
        assert!(exists(&reg.addr, tag));
    }
}

/// Branches the catalog names must be in the clone, the clone must not be
/// shallow, and on GitHub Actions the branch HEAD names is never taken for
/// the default one: each fails closed with the fix in the message.
#[test]
fn clones_that_may_hide_references_fail_closed() {
    let reg = Registry::start();
    let rules = "  keep_last: 1\n  max_delete: 20\n  git:\n    repo: k8s-ci\n    branches: [\"main\", \"release-2.27\"]\n    paths: [\"tests/**/*.yml\"]\n";
    let ws = Workspace::with_catalog(&catalog(&reg.addr, rules));
    let v: Vec<(String, String)> = (1..=2)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    git_repo(&ws, &[("main", &format!("vm: ci/disk:{}\n", v[0].0))]);
    // `release-2.27` was not fetched.
    let (code, out, stderr) = cleanup_env(&ws, &["--apply"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`release-2.27` matches no"), "{stderr}");
    assert_eq!(out["applied"], serde_json::json!([]));
    // A shallow clone.
    let k8s = ws.path().join("k8s-ci");
    git(&k8s, &["checkout", "-q", "-b", "release-2.27"]);
    git(&k8s, &["checkout", "-q", "main"]);
    let url = format!("file://{}", k8s.display());
    git(
        ws.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            "--no-single-branch",
            &url,
            "shallow",
        ],
    );
    ws.write(
        "images.yml",
        catalog(&reg.addr, &rules.replace("repo: k8s-ci", "repo: shallow")),
    );
    let (code, _, stderr) = cleanup_env(&ws, &["--apply"], &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("shallow"), "{stderr}");
    // On GitHub Actions, HEAD names the branch being built, not the default.
    ws.write("images.yml", catalog(&reg.addr, rules));
    git(&k8s, &["checkout", "-q", "release-2.27"]);
    let (code, _, stderr) = cleanup_env(&ws, &[], &[("GITHUB_ACTIONS", "true")]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("default branch"), "{stderr}");
    let (code, _, stderr) = cleanup_env(
        &ws,
        &[],
        &[("GITHUB_ACTIONS", "true"), ("CI_DEFAULT_BRANCH", "main")],
    );
    assert_eq!(code, 0, "{stderr}");
    for (tag, _) in &v {
        assert!(exists(&reg.addr, tag));
    }
}

#[test]
fn a_registry_that_says_deleted_and_keeps_the_tag_is_a_failure() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 1\n  max_delete: 20\n"));
    let v: Vec<(String, String)> = (1..=3)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    // Every tag DELETE answered 202 Accepted, and nothing deleted.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Fault::Respond {
            method: "DELETE",
            path: "/manifests/disk-",
            status: 202,
            headers: String::new(),
            body: Vec::new(),
            times: 100,
            authorized: false,
        }],
    );
    let w = Workspace::with_catalog(&catalog(&proxy.addr, "  keep_last: 1\n  max_delete: 20\n"));
    let (code, out, stderr) = cleanup(&w, &["--apply"]);
    assert_eq!(code, 1, "{stderr}");
    let applied: Vec<&Value> = out["applied"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["tag"].as_str().unwrap().starts_with("disk-"))
        .collect();
    assert_eq!(applied.len(), 2, "{out}");
    for a in applied {
        assert_eq!(a["result"], "failed", "{a}");
        assert!(
            a["detail"].as_str().unwrap().contains("still serves"),
            "{a}"
        );
    }
    for (tag, _) in &v {
        assert!(exists(&reg.addr, tag), "{tag} is gone");
    }
    // The registry itself (tag DELETE unsupported: the throwaway-manifest
    // way) removes them, confirmed.
    let (code, out, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    for a in out["applied"].as_array().unwrap() {
        if a["tag"].as_str().unwrap().starts_with("disk-") {
            assert_eq!(a["result"], "untagged", "{a}");
        }
    }
    assert!(!exists(&reg.addr, &v[0].0) && !exists(&reg.addr, &v[1].0));
    assert!(exists(&reg.addr, &v[2].0));
}

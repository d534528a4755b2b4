//! `imagepipe cleanup` against a real registry and a real git repository.

use serde_json::Value;

use crate::common::{Workspace, git, run, sh, skopeo_pull};
use crate::registry_fixture::Registry;

/// Epoch of 2020-01-01: images built then are old.
pub const OLD: i64 = 1_577_836_800;

pub fn catalog(addr: &str, retention: &str) -> String {
    format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{addr}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n    compression: none\nretention:\n{retention}"
    )
}

/// Publishes version `n` (distinct bytes) built at `epoch`; returns its immutable tag and digest.
pub fn publish_version(ws: &Workspace, n: u8, epoch: i64) -> (String, String) {
    version(ws, "publish", n, epoch)
}

/// Runs `command` (`build` or `publish`) on version `n` of the disk, built
/// at `epoch`; returns its immutable tag and digest.
pub fn version(ws: &Workspace, command: &str, n: u8, epoch: i64) -> (String, String) {
    ws.write("disk.raw", vec![n; 4096]);
    let mut c = ws.cmd();
    c.args([command, "--format", "json"])
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    (
        v["items"][0]["tag"].as_str().unwrap().to_owned(),
        v["items"][0]["digest"].as_str().unwrap().to_owned(),
    )
}

/// A repository with `main` and release branches, each with one CI file.
pub fn git_repo(ws: &Workspace, branches: &[(&str, &str)]) {
    let repo = ws.path().join("k8s-ci");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for (i, (branch, content)) in branches.iter().enumerate() {
        if i == 0 {
            git(&repo, &["checkout", "-q", "-b", branch]);
        } else {
            git(&repo, &["checkout", "-q", "-B", branch, "main"]);
        }
        std::fs::create_dir_all(repo.join("tests")).unwrap();
        std::fs::write(repo.join("tests/ci.yml"), content).unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", branch]);
    }
    git(&repo, &["checkout", "-q", "main"]);
}

/// A `keep_last: 1` plan for `ci/disk`, made through the library, for tests
/// that change the registry between planning and applying.
pub struct LibraryPlan {
    store: imagepipe::store::remote::Remote,
    plan: imagepipe::retention::Plan,
}

impl LibraryPlan {
    pub fn deletions(&self) -> impl Iterator<Item = &imagepipe::retention::Item> {
        self.plan.deletions()
    }

    pub fn apply(&self) -> Vec<imagepipe::cleanup::Applied> {
        use imagepipe::store::Store;
        let store: Box<dyn Store> = Box::new(self.store.clone());
        let map = [(self.store.reference(), store)].into_iter().collect();
        imagepipe::cleanup::apply(&map, &self.plan, &|_| {}).0
    }
}

pub fn keep_last_one_plan(addr: &str) -> LibraryPlan {
    use imagepipe::registry::{Client, Repository, auth::Keychain};
    let client = std::sync::Arc::new(Client::new(Keychain::from_files(Vec::new())));
    let repo = Repository {
        host: addr.to_owned(),
        path: "ci/disk".into(),
        insecure: true,
        chunk_size: None,
    };
    let store = imagepipe::store::remote::Remote::new(client, repo.clone());
    let mut repos = vec![imagepipe::retention::Repo {
        target: "r".into(),
        repository: repo.to_string(),
        path: repo.path.clone(),
        image: "disk".into(),
        templates: vec![disk_matcher()],
        current: Vec::new(),
        tags: Err(String::new()),
    }];
    repos[0].tags = imagepipe::cleanup::list(&store);
    let rules = imagepipe::retention::Rules {
        keep_last: Some(1),
        max_age_secs: None,
        protect: globset::GlobSet::empty(),
    };
    let plan = imagepipe::retention::plan(
        &repos,
        &imagepipe::retention::References::default(),
        &rules,
        OLD + 1000,
        None,
        &[],
    );
    LibraryPlan { store, plan }
}

/// What cleanup judges as ours in the test catalog: `disk-<hash>`.
pub fn disk_matcher() -> regex::Regex {
    imagepipe::template::Template::parse("{name}-{hash}", &[])
        .unwrap()
        .matcher(&imagepipe::context::ImageFacts {
            name: "disk",
            distro: "x",
            version: "1",
            arches: vec!["amd64"],
        })
}

pub fn cleanup(ws: &Workspace, args: &[&str]) -> (i32, Value, String) {
    let mut c = ws.cmd();
    c.args(["cleanup", "--format", "json"]).args(args);
    let out = run(c);
    let v = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out.code, v, out.stderr)
}

pub fn decision<'a>(v: &'a Value, tag: &str) -> &'a Value {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tag"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {v}"))
}

pub fn exists(addr: &str, tag: &str) -> bool {
    std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{addr}/ci/disk:{tag}"),
        ])
        .output()
        .unwrap()
        .status
        .success()
}

const RULES: &str = "  keep_last: 1\n  max_age: 30d\n  protect: [latest]\n  max_delete: 10\n  git:\n    repo: k8s-ci\n    branches: [\"release-*\"]\n    supported_releases: 2\n    paths: [\"tests/**/*.yml\"]\n";

#[test]
fn release_branches_keep_what_they_reference_while_supported() {
    let mut reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, RULES));
    let v: Vec<(String, String)> = (1..=5)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n) * 86_400))
        .collect();
    // An image someone else pushed into the repository: never touched.
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/ci/disk:{}", reg.addr, v[0].0),
            &format!("docker://{}/ci/disk:hand-made", reg.addr),
        ],
        ws.path(),
    );
    git_repo(
        &ws,
        &[
            ("main", &format!("vm: quay.io/kubespray/disk:{}\n", v[0].0)),
            ("release-2.10", &format!("vm: ci/disk@{}\n", v[1].1)),
            ("release-2.9", &format!("vm: {}\n", v[2].0)),
            ("release-2.27", "nothing: here\n"),
        ],
    );
    // The dry run says exactly what apply will do, and deletes nothing.
    let (code, plan, stderr) = cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        decision(&plan, &v[0].0)["reasons"],
        serde_json::json!(["referenced"])
    );
    assert_eq!(
        decision(&plan, &v[0].0)["referenced_by"],
        serde_json::json!(["main:tests/ci.yml"])
    );
    assert_eq!(
        decision(&plan, &v[1].0)["referenced_by"],
        serde_json::json!(["release-2.10:tests/ci.yml"])
    );
    assert_eq!(
        decision(&plan, &v[2].0)["decision"],
        "delete",
        "release-2.9 is past supported_releases: 2"
    );
    assert_eq!(
        decision(&plan, &v[3].0)["reasons"],
        serde_json::json!(["expired"])
    );
    assert_eq!(
        decision(&plan, &v[4].0)["reasons"],
        serde_json::json!(["pointed", "recent"])
    );
    assert_eq!(
        decision(&plan, "latest")["reasons"],
        serde_json::json!(["protected", "mutable", "recent"])
    );
    assert_eq!(
        decision(&plan, "hand-made")["reasons"],
        serde_json::json!(["unmanaged"]),
        "not a tag imagepipe makes"
    );
    assert_eq!(
        plan["unsupported_branches"],
        serde_json::json!(["release-2.9"])
    );
    assert!(
        exists(&reg.addr, &v[2].0) && exists(&reg.addr, &v[3].0),
        "a dry run deletes nothing"
    );
    // With three supported releases, release-2.9 keeps its image.
    let wider = Workspace::with_catalog(&catalog(
        &reg.addr,
        &RULES.replace("supported_releases: 2", "supported_releases: 3"),
    ));
    std::fs::rename(ws.path().join("k8s-ci"), wider.path().join("k8s-ci")).unwrap();
    let (_, plan3, _) = cleanup(&wider, &[]);
    assert_eq!(
        decision(&plan3, &v[2].0)["referenced_by"],
        serde_json::json!(["release-2.9:tests/ci.yml"])
    );
    std::fs::rename(wider.path().join("k8s-ci"), ws.path().join("k8s-ci")).unwrap();
    // Apply deletes v3 and v4 only.
    let (code, applied, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    let results = |attestations: bool| -> Vec<&str> {
        applied["applied"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["tag"].as_str().unwrap().starts_with("sha256-") == attestations)
            .map(|a| a["result"].as_str().unwrap())
            .collect()
    };
    // Tags are removed one by one, never manifests by digest.
    assert_eq!(results(false), ["untagged", "untagged"], "{applied}");
    // Their attestations stay while the images are on the registry.
    assert!(results(true).is_empty(), "{applied}");
    for (i, (tag, _)) in v.iter().enumerate() {
        assert_eq!(exists(&reg.addr, tag), i != 2 && i != 3, "{tag}");
    }
    assert!(exists(&reg.addr, "latest") && exists(&reg.addr, "hand-made"));
    // Applying again deletes nothing.
    let (code, again, _) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0);
    assert_eq!(again["applied"], serde_json::json!([]));
    // After the registry's garbage collection, what was kept pulls in full,
    // and the next run removes the attestations of the images that are gone.
    reg.garbage_collect();
    let (code, third, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    let orphans: Vec<&str> = third["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["tag"].as_str().unwrap())
        .collect();
    for (i, (_, digest)) in v.iter().enumerate() {
        let att = format!("sha256-{}", digest.trim_start_matches("sha256:"));
        assert_eq!(orphans.contains(&att.as_str()), i == 2 || i == 3, "{third}");
        assert_eq!(exists(&reg.addr, &att), i != 2 && i != 3, "{att}");
    }
    for tag in [
        v[0].0.as_str(),
        v[1].0.as_str(),
        v[4].0.as_str(),
        "latest",
        "hand-made",
    ] {
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{tag}"));
    }
}

#[test]
fn the_image_latest_names_keeps_its_immutable_tag() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  protect: [latest]\n"));
    let (tag, digest) = publish_version(&ws, 7, OLD);
    // The catalog builds something else now; `latest` still names 7.
    ws.write("disk.raw", vec![8u8; 4096]);
    let (code, plan, _) = cleanup(&ws, &[]);
    assert_eq!(code, 0);
    assert_eq!(
        decision(&plan, &tag)["reasons"],
        serde_json::json!(["pointed"])
    );
    assert_eq!(
        decision(&plan, "latest")["reasons"],
        serde_json::json!(["protected", "mutable"])
    );
    let (code, applied, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(applied["applied"], serde_json::json!([]), "{applied}");
    assert!(exists(&reg.addr, &tag));
    let latest = sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/ci/disk:latest", reg.addr),
        ],
        ws.path(),
    );
    assert_eq!(
        format!(
            "sha256:{}",
            imagepipe::recipe::sha256_hex(latest.as_bytes())
        ),
        digest,
        "latest still points at the same image"
    );
}

#[test]
fn max_delete_blocks_oversized_runs() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 1\n  max_delete: 1\n"));
    let v: Vec<_> = (1..=3)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    let (code, _, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("more than max_delete 1") && stderr.contains("--max-delete"),
        "{stderr}"
    );
    assert!(exists(&reg.addr, &v[0].0) && exists(&reg.addr, &v[1].0));
    let (code, _, stderr) = cleanup(&ws, &["--apply", "--max-delete", "5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !exists(&reg.addr, &v[0].0) && !exists(&reg.addr, &v[1].0) && exists(&reg.addr, &v[2].0)
    );
}

#[test]
fn failures_to_read_delete_nothing() {
    let reg = Registry::start();
    // An unreadable git repository: fail closed.
    let ws = Workspace::with_catalog(&catalog(&reg.addr, RULES));
    let (tag, _) = publish_version(&ws, 1, OLD);
    publish_version(&ws, 2, OLD + 10);
    std::fs::create_dir_all(ws.path().join("k8s-ci")).unwrap();
    let (code, plan, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        plan["errors"][0]
            .as_str()
            .unwrap()
            .contains("nothing is deleted"),
        "{plan}"
    );
    assert!(exists(&reg.addr, &tag));
    // A tag listing that fails: nothing in that repository is deleted.
    let proxy = crate::fault_proxy::FaultProxy::start(
        &reg.addr,
        vec![crate::fault_proxy::Fault::Status {
            method: "GET",
            path: "/tags/list",
            status: 500,
            retry_after: None,
            times: 1000,
        }],
    );
    let ws2 = Workspace::with_catalog(&catalog(&proxy.addr, "  keep_last: 1\n"));
    let (code, plan, stderr) = cleanup(&ws2, &["--apply"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        plan["errors"][0]
            .as_str()
            .unwrap()
            .contains("nothing in it is deleted"),
        "{plan}"
    );
    assert!(exists(&reg.addr, &tag));
}

#[test]
fn a_tag_moved_between_plan_and_apply_survives() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 1\n"));
    let (old, _) = publish_version(&ws, 1, OLD);
    let (_, newest) = publish_version(&ws, 2, OLD + 10);
    let p = keep_last_one_plan(&reg.addr);
    // The old image's tag only (its attestation stays while the image does).
    let planned: Vec<&str> = p.deletions().map(|i| i.tag.as_str()).collect();
    assert_eq!(planned, [old.as_str()]);
    // Someone re-pushes the old tag onto the newest image before apply.
    sh(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
            &format!("docker://{}/ci/disk@{newest}", reg.addr),
            &format!("docker://{}/ci/disk:{old}", reg.addr),
        ],
        ws.path(),
    );
    let done = p.apply();
    let image = done.iter().find(|a| a.tag == old).unwrap();
    assert_eq!(
        image.result,
        imagepipe::cleanup::Outcome::Skipped,
        "{done:?}"
    );
    assert!(image.detail.contains("moved"));
    assert!(exists(&reg.addr, &old));
}

#[test]
fn git_repositories_owned_by_someone_else_and_bare_clones_are_read() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(
        &reg.addr,
        &RULES.replace("repo: k8s-ci", "repo: bare.git"),
    ));
    let (v1, _) = publish_version(&ws, 1, OLD);
    publish_version(&ws, 2, OLD + 10);
    git_repo(
        &ws,
        &[
            ("main", "x\n"),
            ("release-2.1", &format!("vm: disk:{v1}\n")),
        ],
    );
    git(ws.path(), &["clone", "-q", "--bare", "k8s-ci", "bare.git"]);
    sh(
        "chown",
        &[
            "-R",
            "4321:4321",
            ws.path().join("bare.git").to_str().unwrap(),
        ],
        ws.path(),
    );
    let (code, plan, stderr) = cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        decision(&plan, &v1)["referenced_by"],
        serde_json::json!(["release-2.1:tests/ci.yml"])
    );
    // A CI clone has the release branches as origin/release-*.
    let clone = ws.path().join("clone");
    git(
        ws.path(),
        &["clone", "-q", "k8s-ci", clone.to_str().unwrap()],
    );
    let ws2 = Workspace::with_catalog(&catalog(
        &reg.addr,
        &RULES.replace("repo: k8s-ci", &format!("repo: {}", clone.display())),
    ));
    let (code, plan, stderr) = cleanup(&ws2, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        decision(&plan, &v1)["referenced_by"],
        serde_json::json!(["release-2.1:tests/ci.yml"])
    );
}

#[test]
fn after_a_revert_the_tag_the_catalog_builds_now_is_kept() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "  keep_last: 3\n  max_delete: 20\n"));
    let v: Vec<(String, String)> = (1..=5)
        .map(|n| publish_version(&ws, n, OLD + i64::from(n)))
        .collect();
    // Back to recipe 1: the oldest image is what the catalog builds again.
    let again = publish_version(&ws, 1, OLD + 1);
    assert_eq!(again, v[0]);
    // The cleanup job sees the pipeline's SOURCE_DATE_EPOCH, as the
    // publish jobs did: the catalog builds recipe 1's tag.
    let cleanup_at = |args: &[&str]| {
        let mut c = ws.cmd();
        c.args(["cleanup", "--format", "json"])
            .args(args)
            .env("SOURCE_DATE_EPOCH", (OLD + 1).to_string());
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<Value>(&out.stdout).unwrap()
    };
    let plan = cleanup_at(&[]);
    let first = decision(&plan, &v[0].0);
    assert_eq!(first["decision"], "keep", "{first}");
    assert!(first["reasons"].to_string().contains("current"), "{first}");
    // `latest` moved back to it as well.
    assert_eq!(decision(&plan, "latest")["digest"], first["digest"]);
    assert!(first["reasons"].to_string().contains("pointed"), "{first}");
    assert_eq!(decision(&plan, &v[1].0)["decision"], "delete");
    for (tag, _) in &v[2..] {
        assert_eq!(decision(&plan, tag)["decision"], "keep");
    }
    // Applied, recipe 1 stays pullable by its immutable tag.
    cleanup_at(&["--apply"]);
    assert!(exists(&reg.addr, &v[0].0) && !exists(&reg.addr, &v[1].0));
    // Once the catalog builds something else, the image `latest` names
    // still keeps its immutable tag.
    ws.write("disk.raw", vec![9u8; 4096]);
    let plan = cleanup_at(&[]);
    let first = decision(&plan, &v[0].0);
    assert_eq!(first["decision"], "keep", "{plan}");
    assert_eq!(first["reasons"], serde_json::json!(["pointed"]), "{first}");
}

#[test]
fn the_tag_a_kept_release_branch_builds_is_kept() {
    let reg = Registry::start();
    let files = crate::common::FileServer::start();
    let ws = Workspace::new();
    git(ws.path(), &["init", "-q"]);
    // One upstream image per version; the catalog pins its checksum.
    let pin = |n: u8| {
        let disk = vec![n; 4096];
        let url = files.put(&format!("/disk-{n}.raw"), disk.clone());
        let text = format!(
            "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ url: \"{url}\", sha256: \"{}\" }}\n    format: containerdisk\n    compression: none\nretention:\n  keep_last: 1\n  git:\n    repo: .\n    default_branch: main\n    branches: [\"release-*\"]\n    supported_releases: 1\n    paths: [\"*.yml\"]\n",
            reg.addr,
            crate::common::sha256_hex(&disk)
        );
        ws.write("images.yml", text);
        git(ws.path(), &["add", "-A"]);
        git(ws.path(), &["commit", "-q", "-m", &format!("disk {n}")]);
        let mut c = ws.cmd();
        c.arg("publish");
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        crate::common::first_item(
            &{
                let mut c = ws.cmd();
                c.args(["plan", "--format", "json"]);
                run(c).stdout
            },
            "tag",
        )
    };
    std::fs::write(ws.path().join(".gitignore"), ".imagepipe/\n").unwrap();
    git(ws.path(), &["checkout", "-q", "-b", "main"]);
    let v0 = pin(0);
    git(ws.path(), &["checkout", "-q", "-b", "release-2.27"]);
    let release = pin(1);
    git(ws.path(), &["checkout", "-q", "main"]);
    let old = pin(2);
    let newest = pin(3);
    let (code, plan, stderr) = cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    let kept = decision(&plan, &release);
    assert_eq!(kept["decision"], "keep", "{plan}");
    assert_eq!(kept["reasons"], serde_json::json!(["current"]), "{kept}");
    assert!(
        decision(&plan, &newest)["reasons"]
            .to_string()
            .contains("current")
    );
    for expired in [&v0, &old] {
        assert_eq!(
            decision(&plan, expired)["reasons"],
            serde_json::json!(["expired"])
        );
    }
}

//! The example GitLab pipeline played as GitLab runs it: gitlab-ci-local's
//! shell executor, each job in its own isolated checkout, artifacts handed
//! between jobs, the generated child pipeline run from the plan job's
//! artifact, against a real registry. The registry's state is checked after
//! every pipeline.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Workspace, git, qcow2, run, sh};
use crate::registry_fixture::Registry;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How a pipeline was started, as GitLab's predefined variables say it.
#[derive(Clone, Copy)]
enum Source<'a> {
    Push,
    Tag(&'a str),
    MergeRequest,
    Web(&'a str),
    Schedule(&'a str),
}

struct Project {
    ws: Workspace,
    registry: String,
    glci: PathBuf,
    bin_dir: PathBuf,
}

impl Project {
    fn dir(&self) -> &Path {
        self.ws.path()
    }

    /// gitlab-ci-local in the project with a clean environment: nothing of
    /// the machine's CI, HOME or registry credentials leaks into the jobs.
    fn glci(&self, source: Source<'_>, args: &[&str]) -> crate::common::Output {
        let mut c = assert_cmd::Command::new(&self.glci);
        c.current_dir(self.dir())
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.bin_dir.display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env("HOME", self.dir().join("home"))
            .args(["--home", self.dir().join("home").to_str().unwrap()])
            .args(["--force-shell-executor", "--shell-isolation", "--no-color"]);
        let mut var = |kv: String| {
            c.args(["--variable", &kv]);
        };
        match source {
            Source::Push => {}
            Source::Tag(t) => {
                var(format!("CI_COMMIT_TAG={t}"));
                var(format!("CI_COMMIT_REF_NAME={t}"));
            }
            Source::MergeRequest => var("CI_PIPELINE_SOURCE=merge_request_event".into()),
            Source::Web(b) => {
                var("CI_PIPELINE_SOURCE=web".into());
                var(format!("CI_COMMIT_BRANCH={b}"));
            }
            Source::Schedule(b) => {
                var("CI_PIPELINE_SOURCE=schedule".into());
                var(format!("CI_COMMIT_BRANCH={b}"));
            }
        }
        // Tag and merge request pipelines have no CI_COMMIT_BRANCH.
        if matches!(source, Source::Tag(_) | Source::MergeRequest) {
            c.args(["--unset-variable", "CI_COMMIT_BRANCH"]);
        }
        c.args(args);
        run(c)
    }

    /// The jobs GitLab would create for this pipeline.
    fn jobs(&self, source: Source<'_>) -> Vec<String> {
        let out = self.glci(source, &["--list-json"]);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        // The list follows gitlab-ci-local's notices, on a line of its own.
        let start = if out.stdout.starts_with('[') {
            0
        } else {
            out.stdout.find("\n[").expect("a JSON list") + 1
        };
        let list: Value = serde_json::from_str(&out.stdout[start..]).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .filter(|j| j["when"] != "never")
            .map(|j| j["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Runs a pipeline (or some of its jobs) and, when the plan job ran, the
    /// child pipeline it generated, as `trigger: include: artifact` does.
    fn pipeline(&self, source: Source<'_>, jobs: &[&str]) -> String {
        let out = self.glci(source, jobs);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        let mut log = out.stdout;
        let child = self.dir().join("images-pipeline.yml");
        if child.exists() {
            let out = self.glci(source, &["--file", "images-pipeline.yml"]);
            assert_eq!(out.code, 0, "child pipeline:\n{}{}", out.stdout, out.stderr);
            log.push_str(&out.stdout);
            std::fs::remove_file(child).unwrap();
        }
        log
    }

    /// The image tags of `ci/<repo>` (not the `sha256-…` referrers tags of attestations).
    fn tags(&self, repo: &str) -> Vec<String> {
        crate::common::image_tags(&self.registry, &format!("ci/{repo}"))
    }

    fn commit(&self, message: &str) {
        git(self.dir(), &["add", "-A"]);
        git(self.dir(), &["commit", "-qm", message]);
    }
}

#[test]
fn the_gitlab_pipeline_runs_job_by_job_against_a_real_registry() {
    let glci = root().join(".ci-tools/node_modules/.bin/gitlab-ci-local");
    assert!(
        glci.exists(),
        "{} is missing: scripts/test.sh installs it (npm gitlab-ci-local, and rsync)",
        glci.display()
    );
    let reg = Registry::start();
    let ws = Workspace::new();
    sh(
        "cp",
        &[
            "-r",
            root().join("examples/ci/gitlab/.").to_str().unwrap(),
            ".",
        ],
        ws.path(),
    );
    let catalog = format!(
        "version: 1\nvariables:\n  runc: \"1.2.6\"\n  containerd: \"2.0.4\"\ntargets:\n  - {{ name: ci, registry: \"{r}\", namespace: ci, insecure: true }}\nimages:\n  - name: vm\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: vm.qcow2 }}\n    format: containerdisk\n  - name: node\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: node.qcow2 }}\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\", \"{{kubernetes_series}}\"]\nretention:\n  keep_last: 1\n  git: {{ repo: ., branches: [main], paths: [\"clusters/*.yml\"] }}\n",
        r = reg.addr
    );
    ws.write("images.yml", "version: 1\nimages: []\n");
    qcow2(&ws, "vm.qcow2", "4M");
    qcow2(&ws, "node.qcow2", "5M");
    ws.write(
        "clusters/dev.yml",
        "# cluster definitions; no image pinned yet\n",
    );
    ws.write(
        ".gitignore",
        ".gitlab-ci-local/\n.imagepipe/\nimages-pipeline.yml\nrelease-notes.md\norigin.git/\nhome/\n",
    );
    let project = Project {
        glci,
        registry: reg.addr.clone(),
        bin_dir: assert_cmd::cargo::cargo_bin("imagepipe")
            .parent()
            .unwrap()
            .to_path_buf(),
        ws,
    };
    let dir = project.dir();
    // The project and its remote: local main is ahead of origin/main by the
    // commit being pushed, as in a push pipeline.
    git(dir, &["init", "-q", "-b", "main"]);
    project.commit("init");
    let origin = dir.join("origin.git");
    git(dir, &["init", "-q", "--bare", origin.to_str().unwrap()]);
    git(dir, &["remote", "add", "origin", origin.to_str().unwrap()]);
    git(dir, &["push", "-q", "origin", "main"]);
    git(dir, &["remote", "set-head", "origin", "main"]);
    std::fs::write(dir.join("images.yml"), &catalog).unwrap();
    project.commit("catalog");

    // 1. A push to the default branch that changes the catalog: plan, then
    //    the child pipeline builds, publishes and moves `latest`.
    assert_eq!(
        project.jobs(Source::Push),
        ["images:plan", "images:publish"]
    );
    let log = project.pipeline(Source::Push, &[]);
    assert!(
        log.contains("build vm") && log.contains("publish vm ci"),
        "{log}"
    );
    let vm = project.tags("vm");
    assert_eq!(vm.len(), 2, "{vm:?}");
    assert!(
        vm.contains(&"latest".to_owned()) && vm.iter().any(|t| t.starts_with("vm-")),
        "{vm:?}"
    );
    assert!(
        project.tags("node").is_empty(),
        "node images are built per release"
    );
    git(dir, &["push", "-q", "origin", "main"]);

    // 2. A release tag: the node image for v1.33.6 reaches the registry, the
    //    release notes are the tag pipeline's artifact.
    git(dir, &["tag", "v1.33.6"]);
    let tag = Source::Tag("v1.33.6");
    assert_eq!(
        project.jobs(tag),
        ["images:plan", "images:publish", "images:release-notes"]
    );
    project.pipeline(tag, &["images:plan"]);
    let node = project.tags("node");
    assert_eq!(node.len(), 2, "{node:?}");
    assert!(
        node.contains(&"v1.33".to_owned()) && node.iter().any(|t| t.starts_with("node-v1.33.6-")),
        "{node:?}"
    );
    assert_eq!(
        project.tags("vm"),
        vm,
        "a release does not touch other images"
    );
    project.pipeline(tag, &["images:release-notes"]);
    let notes = std::fs::read_to_string(dir.join("release-notes.md")).unwrap();
    assert!(
        notes.contains("v1.33.6") && notes.contains("node-v1.33.6-"),
        "{notes}"
    );
    std::fs::remove_file(dir.join("release-notes.md")).unwrap();

    // 3. Tags that are not releases start nothing.
    for t in ["vnext", "v1.33", "build-42"] {
        assert!(project.jobs(Source::Tag(t)).is_empty(), "{t}");
    }

    // 4. A merge request that changes the catalog: validate, and a cleanup
    //    dry run that deletes nothing.
    git(dir, &["checkout", "-q", "-b", "feature"]);
    std::fs::write(dir.join("images.yml"), format!("{catalog}# a comment\n")).unwrap();
    project.commit("feature");
    assert_eq!(
        project.jobs(Source::MergeRequest),
        ["images:validate", "images:cleanup"]
    );
    let before = (project.tags("vm"), project.tags("node"));
    let log = project.pipeline(Source::MergeRequest, &[]);
    assert!(log.contains("dry run"), "{log}");
    assert_eq!((project.tags("vm"), project.tags("node")), before);

    // 5. Manual and scheduled pipelines of another branch publish and clean nothing.
    assert!(project.jobs(Source::Web("feature")).is_empty());
    assert!(project.jobs(Source::Schedule("feature")).is_empty());
    git(dir, &["checkout", "-q", "main"]);

    // 6. A new disk on the default branch: a second vm image, `latest` moves.
    qcow2(&project.ws, "vm.qcow2", "6M");
    std::fs::write(dir.join("images.yml"), format!("{catalog}# new vm disk\n")).unwrap();
    project.commit("new vm disk");
    project.pipeline(Source::Push, &[]);
    git(dir, &["push", "-q", "origin", "main"]);
    let vm2 = project.tags("vm");
    assert_eq!(vm2.len(), 3, "{vm2:?}");

    // 7. The schedule on the default branch plans and publishes (upstream may
    //    have moved; here nothing did) and applies the cleanup: the old vm
    //    tag goes (keep_last: 1), the new one, `latest` and the release stay.
    assert_eq!(
        project.jobs(Source::Schedule("main")),
        ["images:plan", "images:publish", "images:cleanup"]
    );
    let log = project.pipeline(Source::Schedule("main"), &[]);
    let vm3 = project.tags("vm");
    assert_eq!(vm3.len(), 2, "{log}\n{vm3:?}");
    let removed: Vec<&String> = vm2.iter().filter(|t| !vm3.contains(t)).collect();
    assert_eq!(removed.len(), 1, "{vm2:?} -> {vm3:?}");
    assert!(
        removed[0].starts_with("vm-") && vm.contains(removed[0]),
        "the older vm image goes"
    );
    assert_eq!(project.tags("node"), node, "the release image stays");
}

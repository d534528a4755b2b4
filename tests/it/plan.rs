//! `imagepipe plan`: tags, hashes, actions with reasons, filters and CI formats.

use serde_json::Value;

use crate::common::{Workspace, basic_catalog, run};

/// `plan`, where the catalog's registry target (nothing listens there) is
/// a warning: these tests are about what the plan says, not reachability.
fn plan(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(["plan", "--allow-unknown"]).args(args);
    run(c)
}

fn plan_json(ws: &Workspace, args: &[&str]) -> Value {
    let out = plan(ws, &[&["--format", "json"], args].concat());
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

#[test]
fn json_items_carry_the_spec_fields() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let v = plan_json(&ws, &[]);
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "non-release images × 2 targets");
    for item in items {
        for key in [
            "image",
            "target",
            "tag",
            "hash",
            "action",
            "reason",
            "mutable_tags",
        ] {
            assert!(!item[key].is_null(), "{key} missing in {item}");
        }
        let hash = item["hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        assert_eq!(item["tag"], format!("ubuntu-2204-{}", &hash[..12]));
        assert_eq!(item["mutable_tags"], serde_json::json!(["latest"]));
        assert_eq!(item["action"], "build");
    }
    assert_eq!(items[0]["target"], "local");
    assert!(
        items[1]["reference"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:5999/ci/ubuntu-2204:ubuntu-2204-"),
        "{}",
        items[1]
    );
}

#[test]
fn table_is_aligned_and_results_only_on_stdout() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let out = plan(&ws, &[]);
    assert_eq!(out.code, 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE        TARGET  TAG"),
        "{}",
        out.stdout
    );
    let col = lines[0].find("ACTION").unwrap();
    assert!(
        lines[1..].iter().all(|l| l[col..].starts_with("build")),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("2 item(s): 2 build, 0 copy, 0 skip"));
}

#[test]
fn release_plans_take_only_release_images() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let v = plan_json(&ws, &["--release", "v1.33.6"]);
    let images: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image"].as_str().unwrap())
        .collect();
    assert_eq!(images, ["node-ubuntu-2404", "node-ubuntu-2404"]);
}

#[test]
fn only_and_target_filter() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let v = plan_json(&ws, &["--target", "dev"]);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["target"], "dev");
    let v = plan_json(&ws, &["--only", "ubuntu-2204", "--target", "local"]);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    for (args, expected) in [
        (
            vec!["--only", "ubuntu-22.04"],
            "--only ubuntu-22.04: the catalog has no such image — did you mean `ubuntu-2204`?",
        ),
        (
            vec!["--target", "prod"],
            "--target prod: the catalog has no such target",
        ),
        (
            vec!["--only", "node-ubuntu-2404"],
            "pass `--release vX.Y.Z`",
        ),
        (
            vec!["--only", "ubuntu-2204", "--release", "v1.33.6"],
            "not part of a release",
        ),
        (vec!["--format", "yaml"], "invalid value 'yaml'"),
    ] {
        let out = plan(&ws, &args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{args:?}: {}", out.stderr);
    }
}

/// Writes a minimal OCI layout holding `tag` (and `latest`, at the same
/// manifest) for `image` under the store.
fn seed_layout(ws: &Workspace, store: &str, image: &str, tag: &str) {
    seed_layout_tags(ws, store, image, &[tag, "latest"]);
}

fn seed_layout_tags(ws: &Workspace, store: &str, image: &str, tags: &[&str]) {
    let dir = format!("{store}/{image}");
    ws.write(
        &format!("{dir}/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    let manifests: Vec<Value> = tags
        .iter()
        .map(|tag| {
            serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", "0".repeat(64)),
                "size": 1,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            })
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "manifests": manifests });
    ws.write(&format!("{dir}/index.json"), index.to_string());
}

#[test]
fn skip_when_the_target_has_the_tag_and_copy_from_the_local_store() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let tag = plan_json(&ws, &[])["items"][0]["tag"]
        .as_str()
        .unwrap()
        .to_owned();
    seed_layout(&ws, ".imagepipe/store", "ubuntu-2204", &tag);
    let v = plan_json(&ws, &[]);
    assert_eq!(v["items"][0]["action"], "skip");
    assert!(
        v["items"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("up to date")
    );
    assert_eq!(v["items"][1]["action"], "copy");
    assert_eq!(v["items"][1]["reason"], "built in the local store");
    // A store with another tag of the image does not count.
    let ws = Workspace::with_catalog(&basic_catalog());
    seed_layout(
        &ws,
        ".imagepipe/store",
        "ubuntu-2204",
        "ubuntu-2204-000000000000",
    );
    assert_eq!(plan_json(&ws, &[])["items"][0]["action"], "build");
}

/// A target that holds the immutable tag but not `latest` (a tags job that
/// failed) is not up to date: the plan says `tag`, so a later run repairs it.
#[test]
fn a_missing_mutable_tag_is_planned_as_tag_not_skip() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let tag = plan_json(&ws, &[])["items"][0]["tag"]
        .as_str()
        .unwrap()
        .to_owned();
    seed_layout_tags(&ws, ".imagepipe/store", "ubuntu-2204", &[&tag]);
    let item = plan_json(&ws, &[])["items"][0].clone();
    assert_eq!(item["action"], "tag", "{item}");
    assert_eq!(item["reason_code"], "tags-behind");
    assert_eq!(item["tags"][0]["tag"], "latest");
    assert_eq!(item["tags"][0]["action"], "move");
    assert_eq!(item["tags"][0]["reason"], "missing");
    // `latest` at another image: behind, to move.
    seed_layout_tags(&ws, ".imagepipe/store", "ubuntu-2204", &[&tag]);
    let dir = ws.path().join(".imagepipe/store/ubuntu-2204");
    let mut index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let mut other = index["manifests"][0].clone();
    other["digest"] = Value::from(format!("sha256:{}", "1".repeat(64)));
    other["annotations"]["org.opencontainers.image.ref.name"] = Value::from("latest");
    index["manifests"].as_array_mut().unwrap().push(other);
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    let item = plan_json(&ws, &[])["items"][0].clone();
    assert_eq!(item["action"], "tag", "{item}");
    assert_eq!(item["tags"][0]["reason"], "points at another image");
}

#[test]
fn copy_from_another_layout_target() {
    let text = basic_catalog().replace(
        "  - name: dev\n    registry: 127.0.0.1:5999\n    namespace: ci\n    insecure: true\n",
        "  - name: mirror\n    layout: ./mirror\n  - name: backup\n    layout: ./backup\n",
    );
    let ws = Workspace::with_catalog(&text);
    let tag = plan_json(&ws, &[])["items"][0]["tag"]
        .as_str()
        .unwrap()
        .to_owned();
    seed_layout(&ws, "mirror", "ubuntu-2204", &tag);
    let v = plan_json(&ws, &[]);
    // The local store is a cache: it is not filled from the other targets.
    assert_eq!(v["items"][0]["target"], "local");
    assert_eq!(v["items"][0]["action"], "skip");
    assert_eq!(v["items"][0]["reason_code"], "local-cache");
    assert_eq!(v["items"][1]["action"], "skip");
    assert_eq!(v["items"][2]["action"], "copy");
    assert_eq!(v["items"][2]["reason"], "target mirror has it");
    assert_eq!(v["items"][2]["source"], "mirror");
    // `--target backup` plans with what the other targets hold.
    let v = plan_json(&ws, &["--target", "backup"]);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["action"], "copy", "{v}");
}

#[test]
fn commit_pipeline_date_and_variables_render() {
    let text = basic_catalog()
        .replace("    format: containerdisk\n  - name: node", "    format: containerdisk\n    tags: [\"{name}-{hash:8}\", \"{commit:7}\", \"p{pipeline}\", \"d{date}\", \"runc-{runc}\", \"{distro}-{version}-{arch}\"]\n  - name: node");
    let ws = Workspace::with_catalog(&text);
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(ws.path())
            .env("GIT_COMMITTER_DATE", "2026-01-02T03:04:05Z")
            .env("GIT_AUTHOR_DATE", "2026-01-02T03:04:05Z")
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        String::from_utf8(ok.stdout).unwrap()
    };
    git(&["init", "-q", "-b", "main"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "init",
    ]);
    let head = git(&["rev-parse", "HEAD"]).trim().to_owned();
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json", "--target", "local"])
        .env("CI_PIPELINE_ID", "777")
        .env("RUNC_VERSION", "1.3.0");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let tags = &v["items"][0]["mutable_tags"];
    assert_eq!(tags[0], head[..7]);
    assert_eq!(tags[1], "p777");
    assert_eq!(tags[2], "d20260102", "{{date}} comes from the commit time");
    assert_eq!(tags[3], "runc-1.3.0", "RUNC_VERSION overrides the default");
    assert_eq!(tags[4], "ubuntu-22.04-amd64");
    // SOURCE_DATE_EPOCH wins over the commit time; CI_COMMIT_SHA over HEAD.
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json", "--target", "local"])
        .env("SOURCE_DATE_EPOCH", "0")
        .env("CI_COMMIT_SHA", "f".repeat(40))
        .env("CI_PIPELINE_ID", "1");
    let v: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert_eq!(v["items"][0]["mutable_tags"][0], "fffffff");
    assert_eq!(v["items"][0]["mutable_tags"][2], "d19700101");
}

#[test]
fn missing_placeholder_values_are_usage_errors() {
    let text = basic_catalog().replace(
        "    format: containerdisk\n  - name: node",
        "    format: containerdisk\n    tags: [\"{name}-{hash}\", \"p{pipeline}\"]\n  - name: node",
    );
    let ws = Workspace::with_catalog(&text);
    let out = plan(&ws, &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "`{pipeline}` has no value: no pipeline id: set CI_PIPELINE_ID or GITHUB_RUN_ID"
        ),
        "{}",
        out.stderr
    );
    let mut c = ws.cmd();
    c.arg("plan")
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .env("CI_PIPELINE_ID", "1");
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("SOURCE_DATE_EPOCH=`yesterday` is not a number"),
        "{}",
        out.stderr
    );
}

#[test]
fn github_matrix_is_a_strategy_matrix() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let out = plan(&ws, &["--format", "github-matrix", "--release", "v1.33.6"]);
    assert_eq!(out.code, 0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let include = v["include"].as_array().unwrap();
    // The `local` layout target is the runner's directory: no job of its own.
    assert_eq!(include.len(), 1, "{v}");
    assert_eq!(include[0]["image"], "node-ubuntu-2404");
    assert_eq!(include[0]["target"], "dev");
    assert_eq!(include[0]["action"], "build");
    assert!(include[0]["tag"].as_str().unwrap().contains("v1.33.6"));
    // What the local store holds is copied, not built again.
    let tag = include[0]["tag"].as_str().unwrap().to_owned();
    seed_layout(&ws, ".imagepipe/store", "node-ubuntu-2404", &tag);
    let v: Value = serde_json::from_str(
        &plan(&ws, &["--format", "github-matrix", "--release", "v1.33.6"]).stdout,
    )
    .unwrap();
    assert_eq!(v["include"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["include"][0]["action"], "copy", "{v}");
}

#[test]
fn gitlab_child_pipeline_has_one_job_per_item_and_a_final_tag_job() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let out = plan(
        &ws,
        &["--format", "gitlab", "--release", "v1.33.6/runc-1.2.6"],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let path = ws.write("child.yml", &out.stdout);
    let mut d = imagepipe::catalog::diag::Diagnostics::new(&path);
    let doc = imagepipe::catalog::yaml::parse(&out.stdout, &mut d)
        .expect("valid YAML")
        .to_json();
    assert!(d.is_empty());
    let job = &doc["publish node-ubuntu-2404 dev"];
    assert_eq!(job["stage"], "publish");
    assert_eq!(
        job["script"][0],
        "imagepipe publish -c images.yml --only node-ubuntu-2404 --target dev --immutable-only --release v1.33.6/runc-1.2.6"
    );
    // No job for the `local` layout target: it is the runner's directory.
    assert!(doc.get("publish node-ubuntu-2404 local").is_none(), "{doc}");
    let last = &doc["move mutable tags"];
    assert_eq!(last["stage"], "tags");
    assert_eq!(last["needs"].as_array().unwrap().len(), 1, "{last}");
    assert_eq!(
        last["script"][0],
        "imagepipe publish -c images.yml --tags-only --release v1.33.6/runc-1.2.6"
    );
    // A narrowed pipeline's tags job moves what the pipeline published.
    let out = plan(
        &ws,
        &[
            "--format",
            "gitlab",
            "--release",
            "v1.33.6",
            "--target",
            "dev",
            "--only",
            "node-ubuntu-2404",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("imagepipe publish -c images.yml --tags-only --only node-ubuntu-2404 --target dev --release v1.33.6"),
        "{}",
        out.stdout
    );
}

/// Each command's `--help` offers only the formats it accepts; CI fan-out
/// formats belong to `plan` alone.
#[test]
fn only_plan_offers_ci_formats() {
    let ws = Workspace::with_catalog(&basic_catalog());
    for cmd in ["validate", "build", "publish", "cleanup", "plan"] {
        let mut c = ws.cmd();
        c.args([cmd, "--help"]);
        let out = run(c);
        assert_eq!(out.code, 0);
        assert_eq!(
            out.stdout.contains("github-matrix"),
            cmd == "plan",
            "{cmd} --help:\n{}",
            out.stdout
        );
        assert!(out.stdout.contains("json"), "{cmd}");
    }
    let mut c = ws.cmd();
    c.args(["publish", "--format", "gitlab"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid value 'gitlab'"),
        "{}",
        out.stderr
    );
}

/// Completions and man pages come from the CLI definition: bash really
/// completes subcommands and flags added later, and every command has a page.
#[test]
fn completions_and_man_pages_follow_the_cli() {
    let ws = Workspace::with_catalog(&basic_catalog());
    let mut c = ws.cmd();
    c.args(["completions", "bash"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    ws.write("imagepipe.bash", out.stdout.as_bytes());
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let script = format!(
            "source ./imagepipe.bash; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _imagepipe imagepipe '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        crate::common::sh("bash", &["-c", &script], ws.path())
    };
    assert_eq!(complete("imagepipe pub").trim(), "publish");
    assert!(
        complete("imagepipe publish --meta")
            .lines()
            .any(|l| l == "--metadata-file"),
        "publish completes --metadata-file"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let mut c = ws.cmd();
        c.args(["completions", shell]);
        let out = run(c);
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains("release-notes"), "{shell}");
    }
    std::fs::create_dir(ws.path().join("man")).unwrap();
    let mut c = ws.cmd();
    c.args(["man", "--dir", "man"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for cmd in [
        "validate",
        "plan",
        "build",
        "publish",
        "release-notes",
        "cleanup",
    ] {
        let page = std::fs::read_to_string(ws.path().join(format!("man/imagepipe-{cmd}.1")))
            .unwrap_or_else(|e| panic!("imagepipe-{cmd}.1: {e}"));
        assert!(page.starts_with(".ie") || page.contains(".TH"), "{cmd}");
    }
    let publish = std::fs::read_to_string(ws.path().join("man/imagepipe-publish.1")).unwrap();
    assert!(publish.contains("metadata\\-file"), "{publish}");
    let mut c = ws.cmd();
    c.args(["man", "--dir", "nowhere"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("nowhere"), "{}", out.stderr);
}

//! Outscale's node images as its workflow builds them
//! (`outscale/kube-image-workflows`): kubernetes-sigs/image-builder's real
//! Outscale template and var files, run from image-builder's own layout
//! (`images/capi`), for a release tag `v1.33.6-runc-v1.2.9`, one job per
//! region on its own runner, then a release job on a fresh runner. Packer's
//! offline `file` builder stands in for `outscale-bsu`; everything else
//! (variables, var files, paths) is image-builder's.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Workspace, run, sh};

const REGIONS: [&str; 3] = ["us-east-2", "eu-west-2", "cloudgouv-eu-west-1"];
const TAG: &str = "v1.33.6-runc-v1.2.9";
/// One image in one region, for the release.
const PUBLISH_ONE: &[&str] = &[
    "publish",
    "--release",
    TAG,
    "--target",
    "eu-west-2",
    "--only",
    "ubuntu-2204",
    "--format",
    "json",
];

/// image-builder's checkout next to the catalog, its Outscale template's
/// builder and provisioners swapped for offline stand-ins: the `file`
/// builder records what the cloud build would have been given, a
/// shell-local step checks Packer runs in `images/capi` (where the
/// template's `./ansible/node.yml` is).
fn checkout(dir: &Path) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/image-builder");
    sh(
        "cp",
        &[
            "-r",
            fixture.to_str().unwrap(),
            dir.join("image-builder").to_str().unwrap(),
        ],
        dir,
    );
    let template = dir.join("image-builder/images/capi/packer/outscale/packer.json");
    let mut t: Value = serde_json::from_slice(&std::fs::read(&template).unwrap()).unwrap();
    let real = &t["builders"][0];
    assert_eq!(real["type"], "outscale-bsu");
    assert_eq!(real["omi_name"], "{{user `omi_name`}}");
    t["builders"] = serde_json::json!([{
        "type": "file",
        "content": "omi_name={{user `omi_name`}} region={{user `region`}} kubernetes_semver={{user `kubernetes_semver`}} kubernetes_series={{user `kubernetes_series`}} kubernetes_deb_version={{user `kubernetes_deb_version`}} runc={{user `runc_version`}} containerd={{user `containerd_version`}} source_image_name={{user `image_name`}} ssh_source_cidr={{user `ssh_source_cidr`}}\n",
        "target": "../../../built-{{user `region`}}.txt"
    }]);
    t["provisioners"] = serde_json::json!([]);
    t["post-processors"] = serde_json::json!([[{
        "type": "shell-local",
        "inline": ["test -f ./ansible/node.yml"]
    }]]);
    std::fs::write(&template, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
}

/// The example catalog, `examples/node-images/images.yml`, as it is but
/// for its `exists` checks (they ask Outscale's API).
fn catalog() -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node-images/images.yml"),
    )
    .unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("exists:"))
        .collect();
    assert!(
        kept.len() < text.lines().count(),
        "the example has exists checks"
    );
    kept.join("\n") + "\n"
}

/// A fresh runner: a clean copy of the repository (no `.imagepipe`).
fn runner(repo: &Path, name: &str) -> PathBuf {
    let dir = repo.parent().unwrap().join(name);
    sh(
        "cp",
        &["-r", repo.to_str().unwrap(), dir.to_str().unwrap()],
        repo.parent().unwrap(),
    );
    let _ = std::fs::remove_dir_all(dir.join(".imagepipe"));
    dir
}

fn imagepipe(
    ws: &Workspace,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> crate::common::Output {
    let mut c = ws.cmd();
    c.current_dir(dir).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    run(c)
}

#[test]
fn image_builders_outscale_template_per_region_then_a_release_job_on_a_fresh_runner() {
    let ws = Workspace::with_catalog(&catalog());
    checkout(ws.path());
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    sh(
        "cp",
        &["-r", ws.path().to_str().unwrap(), repo.to_str().unwrap()],
        root.path(),
    );
    // The plan names one image per OS, the same in every region, whatever
    // runner (and source address) plans it.
    let plan = |cidr: &str| {
        let out = imagepipe(
            &ws,
            &repo,
            &["plan", "--format", "json"],
            &[("CI_COMMIT_TAG", TAG), ("SSH_SOURCE_CIDR", cidr)],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        let v: Value = serde_json::from_str(&out.stdout).unwrap();
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["image"].as_str().unwrap().to_owned(),
                    i["tag"].as_str().unwrap().to_owned(),
                )
            })
            .collect::<std::collections::BTreeSet<_>>()
    };
    let names = plan("198.51.100.7/32");
    assert_eq!(
        names,
        plan("203.0.113.9/32"),
        "runtime_vars are not in the recipe"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    for (image, name) in &names {
        assert!(
            name.starts_with(&format!("{image}-kubernetes-v1.33.6-")),
            "{name}"
        );
    }
    // One job per region, each on its own runner with its own address.
    let mut metadata = Vec::new();
    for (i, region) in REGIONS.iter().enumerate() {
        let dir = runner(&repo, &format!("job-{region}"));
        let cidr = format!("198.51.100.{}/32", i + 1);
        let out = imagepipe(
            &ws,
            &dir,
            &[
                "publish",
                "--target",
                region,
                "--metadata-file",
                "images.json",
            ],
            &[
                ("GITHUB_REF_NAME", TAG),
                ("GITHUB_REF_TYPE", "tag"),
                ("SSH_SOURCE_CIDR", &cidr),
            ],
        );
        assert_eq!(out.code, 0, "{region}: {}", out.stderr);
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("images.json")).unwrap())
                .unwrap();
        for item in v["items"].as_array().unwrap() {
            // No manifest post-processor: the id comes from Packer's own output.
            assert_eq!(item["outcome"], "pushed", "{item}");
            assert_eq!(item["reference"], "File", "{item}");
        }
        // What the cloud build was given.
        let built = std::fs::read_to_string(dir.join(format!("built-{region}.txt"))).unwrap();
        let name = &names.iter().find(|(i, _)| i == "ubuntu-2404").unwrap().1;
        for fact in [
            format!("omi_name={name} "),
            format!("region={region} "),
            "kubernetes_semver=v1.33.6 ".to_owned(),
            "kubernetes_series=v1.33 ".to_owned(),
            "kubernetes_deb_version=1.33.6-1.1 ".to_owned(),
            "runc=1.2.9 ".to_owned(),
            // image-builder's own source-image filter, untouched.
            "source_image_name=Ubuntu-24.04-".to_owned(),
            format!("ssh_source_cidr={cidr}\n"),
        ] {
            assert!(built.contains(&fact), "{region}: {fact} in {built}");
        }
        metadata.push(dir.join("images.json"));
    }
    // The release job, on a fresh runner: without the region jobs' records
    // it cannot know the images; with them, complete release notes.
    let release = runner(&repo, "release");
    let env = [("GITHUB_REF_NAME", TAG), ("GITHUB_REF_TYPE", "tag")];
    let out = imagepipe(&ws, &release, &["release-notes"], &env);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stdout.contains("--metadata-file"), "{}", out.stdout);
    let mut args = vec!["release-notes".to_owned(), "--format".into(), "json".into()];
    for m in &metadata {
        args.push("--metadata-file".into());
        args.push(m.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = imagepipe(&ws, &release, &args, &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let notes: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(notes["release"], TAG);
    assert_eq!(notes["kubernetes"], "v1.33.6");
    let images = notes["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for image in images {
        let regions = image["targets"].as_array().unwrap();
        assert_eq!(regions.len(), 3, "{image}");
        assert!(
            regions
                .iter()
                .all(|r| r["artifact_id"] == "File" && r["problem"].is_null()),
            "{image}"
        );
    }
}

#[test]
fn a_missing_runtime_variable_is_named() {
    let ws = Workspace::with_catalog(&catalog());
    checkout(ws.path());
    let out = imagepipe(&ws, ws.path(), PUBLISH_ONE, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout.contains("`ssh_source_cidr` comes from the environment variable `SSH_SOURCE_CIDR`, which is not set"),
        "{}",
        out.stdout
    );
}

#[test]
fn runtime_variables_cannot_change_what_is_built() {
    for (runtime, says) in [
        (
            "{ omi_name: OMI }",
            "`omi_name` is set by imagepipe or by `vars`/`name_var`",
        ),
        (
            "{ kubernetes_semver: KS }",
            "`kubernetes_semver` is set by imagepipe",
        ),
        (
            "{ overwrite_existing: X }",
            "`overwrite_existing` is set by imagepipe or by `vars`",
        ),
    ] {
        let ws = Workspace::with_catalog(&catalog().replacen(
            "runtime_vars: { ssh_source_cidr: SSH_SOURCE_CIDR }",
            &format!("runtime_vars: {runtime}"),
            1,
        ));
        let mut c = ws.cmd();
        c.arg("validate");
        let out = run(c);
        assert_eq!(out.code, 2, "{runtime}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{runtime}: {}", out.stderr);
    }
    // A name variable the template does not declare would never reach it.
    let ws =
        Workspace::with_catalog(&catalog().replace("name_var: omi_name", "name_var: ami_name"));
    checkout(ws.path());
    let out = imagepipe(
        &ws,
        ws.path(),
        PUBLISH_ONE,
        &[("SSH_SOURCE_CIDR", "198.51.100.1/32")],
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("`ami_name` is not declared by packer/outscale/packer.json"),
        "{}",
        out.stdout
    );
}

//! Machine images per cloud region through Packer (offline `file` builder).

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::common::{Workspace, run};

const REGIONS: [&str; 3] = ["eu-west-2", "us-east-2", "cloudgouv-eu-west-1"];

fn template(manifest: bool) -> Value {
    let mut chain = vec![json!({
        "type": "shell-local",
        "inline": [
            "test \"{{user `fail_region`}}\" != yes",
            "echo {{user `image_name`}} {{user `region`}} {{user `kubernetes_semver`}} {{user `kubernetes_series`}} {{user `kubernetes_deb_version`}} {{user `runc_version`}} {{user `containerd_version`}} $OSC_REGION > vars-{{user `region`}}.txt"
        ]
    })];
    if manifest {
        chain.push(json!({ "type": "manifest", "output": "{{user `output_directory`}}/packer-manifest.json" }));
    }
    json!({
        "variables": {
            "kubernetes_semver": "", "kubernetes_series": "", "kubernetes_deb_version": "",
            "runc_version": "", "containerd_version": "", "image_name": "", "region": "",
            "output_directory": "out", "fail_region": "{{env `FAIL_REGION`}}"
        },
        "builders": [{ "type": "file", "content": "{{user `image_name`}}", "target": "{{user `output_directory`}}/{{user `image_name`}}.img" }],
        "post-processors": [chain]
    })
}

fn catalog(fail: Option<&str>, exists: bool) -> String {
    let mut targets = String::new();
    for r in REGIONS {
        let fail_env = if fail == Some(r) {
            ", FAIL_REGION: \"yes\""
        } else {
            ""
        };
        let check = if exists {
            ", exists: [./exists.sh, \"{image_name}\", \"{region}\"]"
        } else {
            ""
        };
        targets.push_str(&format!("  - {{ name: {r}, cloud: outscale, region: {r}, env: {{ OSC_REGION: {r}{fail_env} }}{check} }}\n"));
    }
    format!(
        "version: 1\nvariables:\n  runc: {{ default: \"1.2.6\", env: RUNC_VERSION }}\n  containerd: {{ default: \"2.0.4\", env: CONTAINERD_VERSION }}\ntargets:\n{targets}defaults:\n  tags: [\"{{name}}-{{kubernetes}}-{{hash}}\"]\nimages:\n  - name: ubuntu-2204-kube\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"22.04\" }}\n    source: {{ packer: {{ template: packer/osc.json }} }}\n    format: machine-image\n"
    )
}

fn setup(fail: Option<&str>, exists: bool, manifest: bool) -> Workspace {
    let ws = Workspace::with_catalog(&catalog(fail, exists));
    ws.write(
        "packer/osc.json",
        serde_json::to_vec_pretty(&template(manifest)).unwrap(),
    );
    ws.write(
        "exists.sh",
        "#!/bin/sh\n# exit 0 (printing its id) if the image exists in the region; 2 when asked to fail\ntest -e \"built/$2/fail\" && exit 2\ntest -e \"built/$2/$1\" && cat \"built/$2/$1\"\n",
    );
    std::fs::set_permissions(
        ws.path().join("exists.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    ws
}

fn publish(ws: &Workspace, extra: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args([
        "publish",
        "--release",
        "v1.33.6/runc-1.2.6",
        "--format",
        "json",
    ])
    .args(extra)
    .env("SOURCE_DATE_EPOCH", "1767225600");
    run(c)
}

#[test]
fn a_release_builds_one_image_per_region_under_one_name() {
    let ws = setup(Some("cloudgouv-eu-west-1"), false, true);
    let mut c = ws.cmd();
    c.args([
        "plan",
        "--release",
        "v1.33.6/runc-1.2.6",
        "--format",
        "json",
    ])
    .env("SOURCE_DATE_EPOCH", "1767225600");
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let items = plan["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(
        items.iter().all(|i| i["action"] == "build"
            && i["reason"].as_str().unwrap().contains("no `exists` check")),
        "{plan}"
    );
    let name = items[0]["tag"].as_str().unwrap().to_owned();
    assert!(name.starts_with("ubuntu-2204-kube-v1.33.6-"));

    let out = publish(&ws, &["--jobs", "3"]);
    assert_eq!(out.code, 1, "one region failed: {}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    for r in REGIONS {
        let item = items.iter().find(|i| i["target"] == r).unwrap();
        assert_eq!(item["tag"], name.as_str(), "same name in every region");
        if r == "cloudgouv-eu-west-1" {
            assert_eq!(item["outcome"], "failed");
            assert!(
                item["error"].as_str().unwrap().contains("packer build"),
                "{item}"
            );
        } else {
            assert_eq!(item["outcome"], "pushed", "{item}");
            assert!(!item["reference"].as_str().unwrap().is_empty());
            // The variables reached Packer, with the region's environment.
            let vars = std::fs::read_to_string(ws.path().join(format!("vars-{r}.txt"))).unwrap();
            assert_eq!(
                vars.trim(),
                format!("{name} {r} v1.33.6 v1.33 1.33.6-1.1 1.2.6 2.0.4 {r}")
            );
        }
    }
    // The results file records all three, the failure included.
    let results: Value = serde_json::from_slice(
        &std::fs::read(ws.path().join(".imagepipe/machine-images.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(results.as_object().unwrap().len(), 3);
    assert!(results["ubuntu-2204-kube/cloudgouv-eu-west-1"]["error"].is_string());
    // Release notes list the artifacts and say what failed.
    let mut c = ws.cmd();
    c.args(["release-notes", "--release", "v1.33.6/runc-1.2.6"])
        .env("SOURCE_DATE_EPOCH", "1767225600");
    let notes = run(c);
    assert_eq!(notes.code, 1);
    for r in ["eu-west-2", "us-east-2"] {
        let artifact = results[format!("ubuntu-2204-kube/{r}")]["artifact_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            notes
                .stdout
                .contains(&format!("| {r} | `{name}`: `{artifact}` |")),
            "{}",
            notes.stdout
        );
    }
    assert!(
        notes.stdout.contains("| cloudgouv-eu-west-1 | failed:"),
        "{}",
        notes.stdout
    );
    // The same as data, in the schema `imagepipe schema --output release-notes` gives.
    let mut c = ws.cmd();
    c.args([
        "release-notes",
        "--release",
        "v1.33.6/runc-1.2.6",
        "--format",
        "json",
    ])
    .env("SOURCE_DATE_EPOCH", "1767225600");
    let out = run(c);
    assert_eq!(out.code, 1);
    let v = crate::json_contract::validated(&ws, "release-notes", &out.stdout);
    assert_eq!(
        v["images"][0]["targets"].as_array().unwrap().len(),
        3,
        "{v}"
    );
}

use crate::common::item_for as item;

#[test]
fn an_existence_check_skips_regions_that_have_the_image() {
    let ws = setup(None, true, true);
    let mut c = ws.cmd();
    c.args(["plan", "--release", "v1.33.6", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1");
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let name = plan["items"][0]["tag"].as_str().unwrap().to_owned();
    assert!(
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "build"),
        "{plan}"
    );
    ws.write(
        &format!("built/eu-west-2/{name}"),
        "ami-0123456789abcdef0\n",
    );
    let mut c = ws.cmd();
    c.args(["plan", "--release", "v1.33.6", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1");
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    let eu = item(&plan, "eu-west-2");
    assert_eq!(eu["action"], "skip", "{plan}");
    let mut c = ws.cmd();
    c.args(["publish", "--release", "v1.33.6", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !ws.path().join("vars-eu-west-2.txt").exists(),
        "no Packer run where the image exists"
    );
    assert!(ws.path().join("vars-us-east-2.txt").exists());
    // The id the check printed is the region's record.
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let eu = item(&v, "eu-west-2");
    assert_eq!(eu["reference"], "ami-0123456789abcdef0", "{eu}");
    // A check that answers neither 0 nor 1 says so in words.
    ws.write("built/us-east-2/fail", "");
    let mut c = ws.cmd();
    c.args(["plan", "--release", "v1.33.6", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    // A check that cannot answer fails the plan: building anyway could make
    // a second image in that region.
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("exited 2 (0: it exists, 1: it does not)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Ok(Some"), "{}", out.stderr);
}

#[test]
fn bad_packer_setups_fail_clearly() {
    // No manifest post-processor: the artifact id Packer printed
    // (`-machine-readable`), here the `file` builder's.
    let ws = setup(None, false, false);
    let out = publish(&ws, &["--target", "eu-west-2"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"][0]["reference"], "File", "{v}");
    // Packer's messages still reach the log.
    assert!(out.stderr.contains("Stored file"), "{}", out.stderr);
    // A template that does not exist.
    let ws = setup(None, false, true);
    std::fs::remove_file(ws.path().join("packer/osc.json")).unwrap();
    let out = publish(&ws, &["--target", "eu-west-2"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("packer/osc.json: no such file or directory"),
        "{}",
        out.stderr
    );
    // No packer on PATH.
    let ws = setup(None, false, true);
    let mut c = ws.cmd();
    c.args([
        "publish",
        "--release",
        "v1.33.6",
        "--format",
        "json",
        "--target",
        "eu-west-2",
    ])
    .env("PATH", "/nonexistent");
    let out = run(c);
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("program not found"), "{}", out.stdout);
    // Machine images need a cloud target and a packer source.
    let ws = Workspace::with_catalog(&catalog(None, false).replace(
        "source: { packer: { template: packer/osc.json } }",
        "source: { file: x.img }",
    ));
    let mut c = ws.cmd();
    c.arg("validate");
    let out = run(c);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("needs one `packer` source"),
        "{}",
        out.stderr
    );
}

/// `publish --dry-run` plans the regions as `publish` would run them: the
/// existence checks answer, Packer does not run, nothing is recorded; and
/// `publish` then builds exactly the regions planned `build`, without
/// asking the checks again.
#[test]
fn a_dry_run_plans_the_regions_and_builds_nothing() {
    let ws = setup(None, true, true);
    let dry = |extra: &[&str]| {
        let mut c = ws.cmd();
        c.args([
            "publish",
            "--dry-run",
            "--release",
            "v1.33.6",
            "--format",
            "json",
        ])
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1");
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        serde_json::from_str::<Value>(&out.stdout).unwrap()
    };
    let name = dry(&[])["items"][0]["tag"].as_str().unwrap().to_owned();
    ws.write(&format!("built/eu-west-2/{name}"), "ami-0eu\n");
    let plan = dry(&[]);
    assert_eq!(item(&plan, "eu-west-2")["action"], "skip", "{plan}");
    assert_eq!(
        item(&plan, "eu-west-2")["machine_image"],
        "ami-0eu",
        "{plan}"
    );
    assert_eq!(item(&plan, "us-east-2")["action"], "build", "{plan}");
    assert_eq!(
        item(&plan, "us-east-2")["reason_code"],
        "region-build",
        "{plan}"
    );
    // Narrowed to one region, the dry run shows that region only.
    let one = dry(&["--target", "us-east-2"]);
    assert_eq!(one["items"].as_array().unwrap().len(), 1, "{one}");
    for r in REGIONS {
        assert!(
            !ws.path().join(format!("vars-{r}.txt")).exists(),
            "{r}: Packer ran"
        );
    }
    assert!(
        !ws.path().join(".imagepipe/machine-images.json").exists(),
        "a dry run records nothing"
    );
    // The check of a region is asked once per run: the plan's answer is the
    // one publish acts on.
    let counted = ws.write(
        "exists.sh",
        "#!/bin/sh\necho \"$2\" >> asked.txt\ntest -e \"built/$2/$1\" && cat \"built/$2/$1\"\n",
    );
    std::fs::set_permissions(&counted, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = ws.cmd();
    c.args(["publish", "--release", "v1.33.6", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(item(&v, "eu-west-2")["outcome"], "present", "{v}");
    assert_eq!(item(&v, "eu-west-2")["reference"], "ami-0eu", "{v}");
    assert_eq!(item(&v, "us-east-2")["outcome"], "pushed", "{v}");
    assert!(!ws.path().join("vars-eu-west-2.txt").exists());
    assert!(ws.path().join("vars-us-east-2.txt").exists());
    let asked = std::fs::read_to_string(ws.path().join("asked.txt")).unwrap();
    for r in REGIONS {
        assert_eq!(asked.lines().filter(|l| *l == r).count(), 1, "{r}: {asked}");
    }
    // --offline asks no region.
    std::fs::remove_file(ws.path().join("asked.txt")).unwrap();
    let mut c = ws.cmd();
    c.args([
        "plan",
        "--offline",
        "--release",
        "v1.33.6",
        "--format",
        "json",
    ])
    .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !ws.path().join("asked.txt").exists(),
        "an existence check ran offline"
    );
    assert!(out.stdout.contains("offline"), "{}", out.stdout);
}

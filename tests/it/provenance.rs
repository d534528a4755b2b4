//! Build facts live in a provenance attestation next to the image (an OCI
//! referrer, in-toto + SLSA provenance v1), never in the image: in the local
//! layout, on registries (referrers tag schema on Distribution 2.8, read back
//! with skopeo), in release notes, and as the age retention uses.

use serde_json::Value;

use crate::common::{FileServer, Workspace, git, qcow2, run, sh};
use crate::registry_fixture::Registry;

fn raw(reference: &str, dir: &std::path::Path) -> Value {
    serde_json::from_str(&sh(
        "skopeo",
        &["inspect", "--raw", "--tls-verify=false", reference],
        dir,
    ))
    .unwrap()
}

/// A catalog with a downloaded disk, in a git repository.
fn setup(targets: &str) -> (Workspace, FileServer, String) {
    let ws = Workspace::new();
    let disk = std::fs::read(qcow2(&ws, "src.qcow2", "4M")).unwrap();
    let server = FileServer::start();
    let url = server.put("/images/disk.qcow2", disk.clone());
    ws.write(
        "images.yml",
        format!(
            "version: 1\ntargets:\n{targets}images:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ url: \"{url}\", sha256: \"{}\" }}\n    format: containerdisk\n",
            crate::common::sha256_hex(&disk)
        ),
    );
    ws.write(".gitignore", ".imagepipe/\nsrc.qcow2\n");
    git(ws.path(), &["init", "-q"]);
    git(ws.path(), &["add", "."]);
    git(ws.path(), &["commit", "-qm", "catalog"]);
    (ws, server, url)
}

#[test]
fn build_facts_go_into_an_attestation_not_the_image() {
    let (ws, _server, url) = setup("  - { name: local, layout: ./.imagepipe/store }\n");
    let mut c = ws.cmd();
    c.arg("build")
        .env("CI_COMMIT_SHA", "c".repeat(40))
        .env("CI_PIPELINE_ID", "4242")
        .env(
            "CI_PIPELINE_URL",
            "https://gitlab.example.com/k8s/ci/-/pipelines/4242",
        );
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let f: Vec<&str> = out.stdout.split_whitespace().collect();
    let (tag, digest) = (f[1], f[2]);
    let layout = ws.path().join(".imagepipe/store/disk");
    let image = raw(&format!("oci:{}:{tag}", layout.display()), ws.path());
    let text = image.to_string();
    assert!(
        !text.contains(&"c".repeat(40)) && !text.contains("4242"),
        "{image}"
    );
    // The layout lists the attestation untagged in index.json (where OCI
    // layout readers look for referrers), with its build time.
    let hex = digest.trim_start_matches("sha256:");
    let list: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let att = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["io.imagepipe.subject"] == digest)
        .unwrap_or_else(|| panic!("no attestation in {list}"));
    assert!(
        att["annotations"]
            .get("org.opencontainers.image.ref.name")
            .is_none()
    );
    assert_eq!(
        att["artifactType"], "application/vnd.in-toto+json",
        "{list}"
    );
    assert!(
        att["annotations"]["org.opencontainers.image.created"]
            .as_str()
            .unwrap()
            .starts_with("20")
    );
    // The attestation manifest names the image as its subject.
    let att_digest = att["digest"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(att_digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["subject"]["digest"], digest);
    let statement: Value = serde_json::from_slice(
        &std::fs::read(
            layout.join("blobs/sha256").join(
                manifest["layers"][0]["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(statement["subject"][0]["digest"]["sha256"], hex);
    let p = &statement["predicate"];
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(
        deps.iter()
            .any(|d| d["uri"] == url.as_str() && d["digest"]["sha256"].is_string()),
        "{deps:?}"
    );
    assert!(
        deps.iter()
            .any(|d| d["digest"]["gitCommit"] == "c".repeat(40)),
        "{deps:?}"
    );
    assert_eq!(
        p["runDetails"]["metadata"]["invocationId"],
        "https://gitlab.example.com/k8s/ci/-/pipelines/4242"
    );
    assert_eq!(
        p["runDetails"]["builder"]["version"]["imagepipe"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        p["buildDefinition"]["internalParameters"]["recipeHash"],
        image["annotations"]["io.imagepipe.recipe"]
    );
    // umoci still reads the layout with the attestation in it.
    sh(
        "umoci",
        &["ls", "--layout", layout.to_str().unwrap()],
        ws.path(),
    );
}

#[test]
fn the_attestation_is_published_as_a_referrer_and_sets_the_age_cleanup_uses() {
    let reg = Registry::start();
    let (ws, _server, _) = setup(&format!(
        "  - {{ name: r, registry: {}, namespace: ci, insecure: true }}\n",
        reg.addr
    ));
    ws.write(
        "images.yml",
        std::fs::read_to_string(ws.path().join("images.yml")).unwrap()
            + "retention:\n  max_age: 30d\n",
    );
    // No SOURCE_DATE_EPOCH: the image says 1970, the attestation says now.
    let mut c = ws.cmd();
    c.args(["publish", "--format", "json"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let (tag, digest) = (
        v["items"][0]["tag"].as_str().unwrap().to_owned(),
        v["items"][0]["digest"].as_str().unwrap().to_owned(),
    );
    let hex = digest.trim_start_matches("sha256:");
    let list = raw(
        &format!("docker://{}/ci/disk:sha256-{hex}", reg.addr),
        ws.path(),
    );
    let att = list["manifests"][0]["digest"].as_str().unwrap();
    let manifest = raw(&format!("docker://{}/ci/disk@{att}", reg.addr), ws.path());
    assert_eq!(manifest["subject"]["digest"], digest.as_str());
    assert_eq!(manifest["artifactType"], "application/vnd.in-toto+json");
    let image = raw(&format!("docker://{}/ci/disk:{tag}", reg.addr), ws.path());
    assert_eq!(
        image["annotations"]["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
    // Cleanup judges the image by its attestation's build time: young.
    let mut c = ws.cmd();
    c.args(["cleanup", "--format", "json"]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    let item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tag"] == tag.as_str())
        .unwrap();
    assert_eq!(item["decision"], "keep", "{plan}");
    assert!(
        item["reasons"]
            .as_array()
            .unwrap()
            .contains(&Value::from("young")),
        "{item}"
    );
    let att_item = plan["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["tag"] == format!("sha256-{hex}").as_str())
        .unwrap();
    assert_eq!(att_item["decision"], "keep");
    assert_eq!(att_item["reasons"], serde_json::json!(["attestation"]));
}

#[test]
fn release_notes_list_the_attestation() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: {}, namespace: k8s, insecure: true }}\nimages:\n  - name: node\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    kubernetes: true\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\"]\n",
        reg.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let mut c = ws.cmd();
    c.args(["publish", "--release", "v1.33.6"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    assert_eq!(run(c).code, 0);
    let mut c = ws.cmd();
    c.args(["release-notes", "--release", "v1.33.6"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("(provenance `sha256:")
            && out.stdout.contains("built 2023-11-14T22:13:20Z"),
        "{}",
        out.stdout
    );
    // The same facts as JSON, the release taken from GitLab's tag variable.
    let mut c = ws.cmd();
    c.args(["release-notes", "--format", "json"])
        .env("CI_COMMIT_TAG", "v1.33.6/runc-1.2.6")
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["kubernetes"], "v1.33.6");
    assert_eq!(v["release"], "v1.33.6/runc-1.2.6");
    let entry = &v["images"][0]["targets"][0];
    assert!(
        entry["reference"]
            .as_str()
            .unwrap()
            .contains("/k8s/node:node-v1.33.6-"),
        "{v}"
    );
    assert_eq!(entry["provenance"][0]["built_at"], "2023-11-14T22:13:20Z");
}

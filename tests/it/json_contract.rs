//! `--format json` is a contract: every output carries `schema_version`,
//! validates against the schema `imagepipe schema --output …` prints, and a
//! failure prints an `error` object instead of nothing.

use serde_json::Value;

use crate::common::{Workspace, item_for, qcow2, run};
use crate::registry_fixture::Registry;

/// The schema `imagepipe schema --output what` prints.
pub fn schema(ws: &Workspace, what: &str) -> Value {
    let mut c = ws.cmd();
    c.args(["schema", "--output", what]);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap()
}

/// `stdout` parsed, valid against the `what` schema, at schema version 1.
pub fn validated(ws: &Workspace, what: &str, stdout: &str) -> Value {
    let v: Value = serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let validator = jsonschema::validator_for(&schema(ws, what)).expect("a valid JSON Schema");
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{v}");
    assert_eq!(v["schema_version"], 1, "{v}");
    v
}

fn json(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(args)
        .args(["--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    run(c)
}

#[test]
fn every_output_validates_against_its_schema_and_speaks_one_vocabulary() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: eu, registry: {}, namespace: eu, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\nretention:\n  keep_last: 1\n",
        reg.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let plan = json(&ws, &["plan"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let p = validated(&ws, "plan", &plan.stdout);
    let eu = item_for(&p, "eu");
    let tag = eu["tag"].as_str().unwrap().to_owned();
    assert_eq!(
        eu["reference"],
        format!("{}/eu/disk:{tag}", reg.addr),
        "{eu}"
    );
    assert!(eu.get("repository").is_none(), "one word for it: {eu}");
    let published = json(&ws, &["publish"]);
    assert_eq!(published.code, 0, "{}", published.stderr);
    let v = validated(&ws, "publish", &published.stdout);
    let item = item_for(&v, "eu");
    assert_eq!(item["reference"], eu["reference"], "plan and publish agree");
    let cleaned = json(&ws, &["cleanup"]);
    assert_eq!(cleaned.code, 0, "{}", cleaned.stderr);
    let c = validated(&ws, "cleanup", &cleaned.stdout);
    let created = c["items"][0]["created"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.contains('T'),
        "RFC 3339: {created}"
    );
    // A disk with nothing to boot fails verification: the output still holds.
    let verified = json(&ws, &["verify"]);
    let v = validated(&ws, "verify", &verified.stdout);
    assert_eq!(v["items"][0]["image"], "disk", "{v}");
}

#[test]
fn a_failure_prints_an_error_object() {
    // A catalog error: exit 2, `invalid`.
    let ws = Workspace::with_catalog("version: 1\nimages:\n  - name: x\n");
    for command in ["plan", "publish", "build", "cleanup", "verify"] {
        let out = json(&ws, &[command]);
        assert_eq!(out.code, 2, "{command}: {}", out.stderr);
        let v = validated(&ws, "error", &out.stdout);
        assert_eq!(v["error"]["kind"], "invalid", "{v}");
        assert_eq!(v["error"]["exit_code"], 2, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // A target that cannot be published to: exit 1, `failed`, why.
    let dead = format!("127.0.0.1:{}", crate::registry_fixture::free_port());
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{dead}\", insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n"
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = json(&ws, &["publish"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = validated(&ws, "error", &out.stdout);
    assert_eq!(v["error"]["kind"], "failed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot be published to"),
        "{v}"
    );
}

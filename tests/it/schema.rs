//! `imagepipe schema`, and every example catalog checked against it.

use std::path::{Path, PathBuf};

use crate::common::{Workspace, basic_catalog, run};

fn schema() -> serde_json::Value {
    let ws = Workspace::new();
    let mut c = ws.cmd();
    c.arg("schema");
    let out = run(c);
    assert_eq!(out.code, 0);
    serde_json::from_str(&out.stdout).unwrap()
}

fn yaml_to_json(path: &Path, text: &str) -> serde_json::Value {
    let mut d = imagepipe::catalog::diag::Diagnostics::new(path);
    imagepipe::catalog::yaml::parse(text, &mut d)
        .unwrap()
        .to_json()
}

fn example_catalogs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "images.yml") {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_example_catalog_matches_the_schema_and_validates() {
    let validator = jsonschema::validator_for(&schema()).expect("a valid JSON Schema");
    let examples = example_catalogs();
    assert!(
        examples.len() >= 2,
        "examples/ holds the documented catalogs: {examples:?}"
    );
    for path in examples {
        let text = std::fs::read_to_string(&path).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&yaml_to_json(&path, &text))
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        let ws = Workspace::new();
        let mut c = ws.cmd();
        c.args(["validate", "-c"]).arg(&path);
        let out = run(c);
        assert_eq!(out.code, 0, "{}: {}", path.display(), out.stderr);
    }
}

#[test]
fn the_schema_rejects_what_validate_rejects() {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let p = Path::new("images.yml");
    assert!(validator.is_valid(&yaml_to_json(p, &basic_catalog())));
    for bad in [
        basic_catalog().replace("format: containerdisk", "format: disk"),
        basic_catalog().replace("    namespace: ci\n", "    namespace: ci\n    tls: false\n"),
        basic_catalog().replace("sha256: \"", "sha1: \""),
        basic_catalog().replace("version: 1\n", "version: 2\n"),
    ] {
        assert!(
            !validator.is_valid(&yaml_to_json(p, &bad)),
            "schema accepted:\n{bad}"
        );
    }
}

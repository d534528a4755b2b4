//! `imagepipe publish` and `release-notes` against a real Distribution registry,
//! read back with skopeo.

use serde_json::Value;

use crate::common::{Workspace, first_item, qcow2, run, sh, skopeo_pull};
use crate::registry_fixture::Registry;

fn catalog(addr: &str, extra_targets: &str) -> String {
    format!(
        "version: 1\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: eu, registry: {addr}, namespace: eu/k8s, insecure: true }}\n  - {{ name: us, registry: {addr}, namespace: us/k8s, insecure: true }}\n{extra_targets}images:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n"
    )
}

fn publish(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(["publish", "--format", "json"])
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    run(c)
}

/// `disk.raw`: `mib` MiB of bytes that do not compress.
fn noise_disk(ws: &Workspace, mib: u32) {
    let noise: Vec<u8> = (0..(mib << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect();
    ws.write("disk.raw", noise);
}

fn remote_digest(addr: &str, repo: &str, tag: &str) -> Option<String> {
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{addr}/{repo}:{tag}"),
        ])
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| imagepipe::recipe::sha256_hex(&out.stdout))
}

#[test]
fn publishes_to_every_target_with_the_same_digest() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "8M");
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let tag = items[0]["tag"].as_str().unwrap();
    let digest = items[0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    for ns in ["eu/k8s", "us/k8s"] {
        assert_eq!(
            remote_digest(&reg.addr, &format!("{ns}/disk"), tag).as_deref(),
            Some(digest.as_str()),
            "{ns}"
        );
        assert_eq!(
            remote_digest(&reg.addr, &format!("{ns}/disk"), "latest").as_deref(),
            Some(digest.as_str()),
            "{ns} latest"
        );
    }
    assert_eq!(items[1]["outcome"], "pushed");
    assert_eq!(items[1]["moved"], serde_json::json!(["latest"]));
    // skopeo copies it back in full.
    skopeo_pull(&ws, &reg.addr, &format!("us/k8s/disk:{tag}"));
    // A rerun pushes nothing and moves nothing new.
    let again = publish(&ws, &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let v: Value = serde_json::from_str(&again.stdout).unwrap();
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["outcome"] == "present"),
        "{}",
        again.stdout
    );
    // plan now reads the registry: skip everywhere.
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    assert!(
        plan["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["action"] == "skip"),
        "{plan}"
    );
}

#[test]
fn a_failing_target_leaves_mutable_tags_alone() {
    let reg = Registry::start();
    // A target that reads and takes uploads, then refuses the manifest.
    let broken = crate::fault_proxy::FaultProxy::start(
        &reg.addr,
        vec![crate::fault_proxy::Fault::Status {
            method: "PUT",
            path: "/manifests/",
            status: 400,
            retry_after: None,
            times: 1000,
        }],
    );
    let extra = format!(
        "  - {{ name: broken, registry: \"{}\", namespace: x, insecure: true }}\n",
        broken.addr
    );
    let ws = Workspace::with_catalog(&catalog(&reg.addr, &extra));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let tag = v["items"][0]["tag"].as_str().unwrap().to_owned();
    let broken_item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == "broken")
        .unwrap()
        .clone();
    assert_eq!(broken_item["outcome"], "failed");
    assert_eq!(broken_item["error_code"], "store", "{broken_item}");
    assert!(
        broken_item["error"].as_str().unwrap().contains("400"),
        "{broken_item}"
    );
    // The live targets got the immutable tag, but `latest` did not move anywhere.
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", &tag).is_some());
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", "latest").is_none());
    assert!(remote_digest(&reg.addr, "us/k8s/disk", "latest").is_none());
}

/// A plain-HTTP registry addressed over TLS: the error says `insecure: true`.
#[test]
fn plain_http_over_tls_says_what_to_set() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        reg.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let mut c = ws.cmd();
    c.arg("plan");
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("answers plain HTTP, not TLS") && out.stderr.contains("insecure: true"),
        "{}",
        out.stderr
    );
}

/// A selected target that cannot be reached, or does not take pushes, stops
/// the run before anything is built: at once (a refused connection is not
/// retried), naming the target and what to check. One outside `--target`
/// only warns.
#[test]
fn publish_checks_every_selected_target_before_building() {
    let reg = Registry::start();
    let dead = format!("127.0.0.1:{}", crate::registry_fixture::free_port());
    let read_only = crate::fault_proxy::FaultProxy::start(
        &reg.addr,
        vec![crate::fault_proxy::Fault::Status {
            method: "POST",
            path: "/blobs/uploads/",
            status: 403,
            retry_after: None,
            times: 1000,
        }],
    );
    let extra = format!(
        "  - {{ name: dead, registry: \"{dead}\", namespace: x, insecure: true }}\n  - {{ name: ro, registry: \"{}\", namespace: x, insecure: true }}\n",
        read_only.addr
    );
    let ws = Workspace::with_catalog(&catalog(&reg.addr, &extra));
    qcow2(&ws, "disk.qcow2", "4M");
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"]);
    let planned = run(c);
    assert_eq!(planned.code, 1, "{}", planned.stderr);
    assert!(
        planned.stderr.contains("nothing listens at"),
        "{}",
        planned.stderr
    );
    assert!(
        planned.stderr.contains("--allow-unknown"),
        "{}",
        planned.stderr
    );
    assert!(
        !planned.stderr.contains("retrying"),
        "a refused connection is not retried: {}",
        planned.stderr
    );
    let v: Value = serde_json::from_str(&planned.stdout).unwrap();
    let dead_item = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["target"] == "dead")
        .unwrap()
        .clone();
    assert!(
        dead_item["unreadable"].as_str().unwrap().contains(&dead),
        "{dead_item}"
    );
    let mut c = ws.cmd();
    c.args(["plan", "--allow-unknown"]);
    assert_eq!(run(c).code, 0);
    // Outside --target, an unreadable target only limits the copy sources.
    let mut c = ws.cmd();
    c.args(["plan", "--target", "eu"]);
    let narrowed = run(c);
    assert_eq!(narrowed.code, 0, "{}", narrowed.stderr);
    assert!(narrowed.stderr.contains("WARN"), "{}", narrowed.stderr);
    // publish: nothing built, nothing pushed anywhere.
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("nothing was built or pushed"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    assert!(!ws.path().join(".imagepipe/store/disk").exists());
    // The registry that refuses pushes is caught before building too.
    let out = publish(&ws, &["--target", "ro", "--target", "eu"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("ro: cannot push"), "{}", out.stderr);
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    let tag = dead_item["tag"].as_str().unwrap();
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", tag).is_none());
    // Without them, the run goes on.
    let out = publish(&ws, &["--target", "eu"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn fan_out_jobs_then_tags_only() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    let latest = |t: &str| remote_digest(&reg.addr, &format!("{t}/k8s/disk"), "latest");
    // The eu job finishes first: the immutable tag only, shown as held.
    let dry = publish(&ws, &["--target", "eu", "--immutable-only", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("--immutable-only"), "{}", dry.stdout);
    let out = publish(&ws, &["--target", "eu", "--immutable-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tag = first_item(&out.stdout, "tag");
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", &tag).is_some());
    assert!(latest("eu").is_none(), "a fan-out job does not move latest");
    // The tags job cannot run before every target holds the image.
    let early = publish(&ws, &["--tags-only"]);
    assert_eq!(early.code, 1, "{}", early.stderr);
    assert!(early.stderr.contains("missing on us"), "{}", early.stderr);
    assert!(latest("eu").is_none(), "eu's latest waits for us");
    let out = publish(&ws, &["--target", "us", "--immutable-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(latest("us").is_none());
    // The final job, on a fresh runner without the local store.
    std::fs::remove_dir_all(ws.path().join(".imagepipe")).unwrap();
    let out = publish(&ws, &["--tags-only"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = remote_digest(&reg.addr, "eu/k8s/disk", &tag);
    assert_eq!(latest("eu"), d);
    assert_eq!(latest("us"), d);
}

#[test]
fn a_run_narrowed_to_one_target_moves_its_mutable_tags() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = publish(&ws, &["--target", "us"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tag = first_item(&out.stdout, "tag");
    let d = remote_digest(&reg.addr, "us/k8s/disk", &tag);
    assert!(d.is_some());
    assert_eq!(remote_digest(&reg.addr, "us/k8s/disk", "latest"), d);
    // The target the run did not select is untouched.
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", &tag).is_none());
    assert!(remote_digest(&reg.addr, "eu/k8s/disk", "latest").is_none());
}

#[test]
fn immutable_tags_are_never_overwritten_on_a_registry() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json", "--offline"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let tag = serde_json::from_str::<Value>(&run(c).stdout).unwrap()["items"][0]["tag"]
        .as_str()
        .unwrap()
        .to_owned();
    // Someone else put other bytes under our immutable tag on one target.
    let other = Workspace::with_catalog(&catalog(&reg.addr, "").replace("ubuntu", "debian"));
    qcow2(&other, "disk.qcow2", "6M");
    let mut c = other.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
    sh(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!(
                "oci:{}/.imagepipe/store/disk:latest",
                other.path().display()
            ),
            &format!("docker://{}/us/k8s/disk:{tag}", reg.addr),
        ],
        other.path(),
    );
    let squatter = remote_digest(&reg.addr, "us/k8s/disk", &tag);
    // The plan reads the recipe of the holder: the image is in conflict on
    // every target (nothing copied from it, no tag moved to it, us included).
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let plan: Value = serde_json::from_str(&run(c).stdout).unwrap();
    for i in plan["items"].as_array().unwrap() {
        assert_eq!(i["action"], "conflict", "{i}");
        assert_eq!(i["reason_code"], "foreign-recipe", "{i}");
        assert_eq!(i["tags"][0]["action"], "hold", "{i}");
    }
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    for i in v["items"].as_array().unwrap() {
        assert_eq!(i["error_code"], "foreign-recipe", "{i}");
    }
    assert!(
        out.stderr.contains("did not build from this recipe") && out.stderr.contains("not copied"),
        "{}",
        out.stderr
    );
    assert_eq!(
        remote_digest(&reg.addr, "us/k8s/disk", &tag),
        squatter,
        "left as it was"
    );
    assert!(
        remote_digest(&reg.addr, "eu/k8s/disk", "latest").is_none(),
        "latest did not move"
    );
    let forced = publish(&ws, &["--force"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    let rebuilt = remote_digest(&reg.addr, "us/k8s/disk", &tag);
    assert_ne!(rebuilt, squatter);
    // --force moves the mutable tags the conflict held, to the rebuilt image.
    for repo in ["us/k8s/disk", "eu/k8s/disk"] {
        assert_eq!(remote_digest(&reg.addr, repo, "latest"), rebuilt, "{repo}");
    }
}

/// An image routed to one target only is still found in the local store a
/// `build` filled: `publish` copies it from there and never builds again.
#[test]
fn the_local_store_is_a_copy_source_for_images_routed_elsewhere() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, "").replace(
        "format: containerdisk\n",
        "format: containerdisk\n    targets: [eu]\n",
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let mut c = ws.cmd();
    c.arg("build").env("SOURCE_DATE_EPOCH", "1700000000");
    assert_eq!(run(c).code, 0);
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("building"), "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["items"][0]["from"], "local", "{v}");
}

#[test]
fn basic_auth_from_docker_config_and_no_secret_in_any_output() {
    let password = "s3cret-Pa55word";
    let reg = Registry::start_with_auth("ci", password);
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    // Without credentials: a clear error naming the fix.
    let out = publish(&ws, &["--target", "eu"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("requires credentials") && out.stderr.contains("DOCKER_CONFIG"),
        "{}",
        out.stderr
    );
    // Wrong --creds: the flag is named, not a login the user did not use.
    let mut c = ws.cmd();
    c.args(["plan", "--target", "eu", "--creds", "ci:wrong"]);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("refused the --creds credentials")
            && !out.stderr.contains("docker login"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong"),
        "no secret in the output: {}",
        out.stderr
    );
    let config = ws.path().join("docker");
    let auth = base64_encode(&format!("ci:{password}"));
    ws.write(
        "docker/config.json",
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    );
    let run_with = |args: &[&str]| {
        let mut c = ws.cmd();
        c.args(args)
            .env("DOCKER_CONFIG", &config)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("IMAGEPIPE_LOG", "debug");
        run(c)
    };
    let outs = [
        run_with(&["publish"]),
        run_with(&["publish", "--format", "json"]),
        run_with(&["plan", "--format", "json"]),
        run_with(&["release-notes", "--release", "v1.33.6"]),
    ];
    assert_eq!(outs[0].code, 0, "{}", outs[0].stderr);
    for o in &outs {
        for text in [&o.stdout, &o.stderr] {
            assert!(!text.contains(password), "password leaked:\n{text}");
            assert!(!text.contains(&auth), "auth leaked:\n{text}");
        }
    }
    // A wrong password is a clear failure that does not echo it either.
    ws.write(
        "docker/config.json",
        format!(
            r#"{{"auths":{{"{}":{{"username":"ci","password":"wrong-{password}"}}}}}}"#,
            reg.addr
        ),
    );
    let bad = run_with(&["publish", "--force"]);
    assert_eq!(bad.code, 1);
    assert!(!bad.stderr.contains(password) && !bad.stdout.contains(password));
    assert!(
        bad.stderr.contains("refused the credentials found for")
            && bad.stderr.contains(&format!("docker login {}", reg.addr)),
        "the error says what to do: {}",
        bad.stderr
    );
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn release_notes_list_every_reference_with_its_digest() {
    let reg = Registry::start();
    let text = format!(
        "version: 1\nvariables:\n  runc: {{ default: \"1.2.6\", env: RUNC_VERSION }}\n  containerd: {{ default: \"2.0.4\" }}\ntargets:\n  - {{ name: eu, registry: {a}, namespace: eu, insecure: true }}\n  - {{ name: us, registry: {a}, namespace: us, insecure: true }}\nimages:\n  - name: node-2204\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"22.04\" }}\n    source: {{ file: a.qcow2 }}\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\", \"{{kubernetes_series}}-latest\"]\n  - name: node-2404\n    kubernetes: true\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: b.qcow2 }}\n    format: containerdisk\n    tags: [\"{{name}}-{{kubernetes}}-{{hash}}\"]\n",
        a = reg.addr
    );
    let ws = Workspace::with_catalog(&text);
    qcow2(&ws, "a.qcow2", "4M");
    qcow2(&ws, "b.qcow2", "5M");
    let notes = |ws: &Workspace| {
        let mut c = ws.cmd();
        c.args(["release-notes", "--release", "v1.33.6/runc-1.2.6"])
            .env("SOURCE_DATE_EPOCH", "1");
        run(c)
    };
    let before = notes(&ws);
    assert_eq!(before.code, 1, "nothing published yet");
    assert!(before.stdout.contains("missing"));
    let mut c = ws.cmd();
    c.args([
        "publish",
        "--release",
        "v1.33.6/runc-1.2.6",
        "--format",
        "json",
    ])
    .env("SOURCE_DATE_EPOCH", "1");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let after = notes(&ws);
    assert_eq!(after.code, 0, "{}", after.stderr);
    assert!(after.stdout.starts_with("# Kubernetes v1.33.6 node images"));
    assert!(
        after.stdout.contains("| runc | 1.2.6 |")
            && after.stdout.contains("| containerd | 2.0.4 |")
    );
    assert!(after.stdout.contains("1.33.6-1.1"));
    for item in v["items"].as_array().unwrap() {
        let reference = format!(
            "{}@{}",
            item["reference"].as_str().unwrap(),
            item["digest"].as_str().unwrap()
        );
        assert!(
            after.stdout.contains(&reference),
            "{reference} missing in\n{}",
            after.stdout
        );
    }
    assert!(remote_digest(&reg.addr, "eu/node-2204", "v1.33-latest").is_some());
}

mod faults {
    use super::*;
    use crate::fault_proxy::{Fault, FaultProxy};
    use std::sync::atomic::Ordering;

    fn one_target(addr: &str) -> String {
        format!(
            "version: 1\ntargets:\n  - {{ name: r, registry: \"{addr}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n    compression: none\n"
        )
    }

    /// Publish with short retry delays: the policy (attempts, Retry-After,
    /// which failures are retried) is the same, only the sleeping is shorter.
    fn publish(ws: &Workspace, args: &[&str]) -> crate::common::Output {
        let mut c = ws.cmd();
        c.args(["publish", "--format", "json"])
            .args(args)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("IMAGEPIPE_RETRY_BACKOFF", "10ms");
        run(c)
    }

    #[test]
    fn retry_settings_are_checked() {
        let reg = Registry::start();
        let (ws, _proxy) = setup(&reg, Vec::new());
        for (var, value) in [
            ("IMAGEPIPE_RETRY_BACKOFF", "fast"),
            ("IMAGEPIPE_RETRY_BACKOFF", "10"),
            ("IMAGEPIPE_RETRIES", "0"),
            ("IMAGEPIPE_RETRIES", "many"),
        ] {
            let mut c = ws.cmd();
            c.args(["publish"]).env(var, value);
            let out = run(c);
            assert_eq!(out.code, 2, "{var}={value}: {}", out.stderr);
            assert!(
                out.stderr.contains(&format!("{var}={value}")),
                "{}",
                out.stderr
            );
        }
    }

    fn setup(reg: &Registry, faults: Vec<Fault>) -> (Workspace, FaultProxy) {
        let proxy = FaultProxy::start(&reg.addr, faults);
        let ws = Workspace::with_catalog(&one_target(&proxy.addr));
        noise_disk(&ws, 4);
        (ws, proxy)
    }

    #[test]
    fn server_errors_and_rate_limits_are_retried() {
        let reg = Registry::start();
        let (ws, proxy) = setup(
            &reg,
            vec![
                Fault::Status {
                    method: "HEAD",
                    path: "/blobs/",
                    status: 503,
                    retry_after: None,
                    times: 3,
                },
                Fault::Status {
                    method: "POST",
                    path: "/blobs/uploads/",
                    status: 429,
                    retry_after: Some(1),
                    times: 1,
                },
                Fault::Status {
                    method: "PUT",
                    path: "/manifests/",
                    status: 502,
                    retry_after: None,
                    times: 2,
                },
            ],
        );
        let started = std::time::Instant::now();
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            proxy.injected.load(Ordering::SeqCst),
            6,
            "every fault was hit"
        );
        assert!(
            started.elapsed() >= std::time::Duration::from_secs(1),
            "Retry-After was honoured"
        );
        assert!(out.stderr.contains("HTTP 429, retrying"), "{}", out.stderr);
        let tag = first_item(&out.stdout, "tag");
        assert!(remote_digest(&reg.addr, "ci/disk", &tag).is_some());
        assert!(remote_digest(&reg.addr, "ci/disk", "latest").is_some());
    }

    #[test]
    fn a_connection_reset_mid_upload_starts_the_upload_again() {
        let reg = Registry::start();
        let (ws, proxy) = setup(
            &reg,
            vec![Fault::ResetAfter {
                method: "PUT",
                path: "/blobs/uploads/",
                skip: 0,
                bytes: 1 << 20,
                times: 2,
            }],
        );
        // Built first: this is the upload from the store (a fresh build
        // streams its layers instead, see below).
        build_first(&ws);
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(proxy.injected.load(Ordering::SeqCst), 2);
        assert!(
            out.stderr.contains("starting the upload again"),
            "{}",
            out.stderr
        );
        let tag = first_item(&out.stdout, "tag");
        // skopeo pulls every byte back.
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{tag}"));
    }

    fn build_first(ws: &Workspace) {
        let mut c = ws.cmd();
        c.arg("build").env("SOURCE_DATE_EPOCH", "1700000000");
        assert_eq!(run(c).code, 0);
    }

    fn chunked(reg: &Registry, fault: Fault) -> (Workspace, FaultProxy, crate::common::Output) {
        let proxy = FaultProxy::start(&reg.addr, vec![fault]);
        let ws = Workspace::with_catalog(
            &one_target(&proxy.addr)
                .replace("insecure: true }", "insecure: true, chunk_size: 5MiB }"),
        );
        noise_disk(&ws, 12);
        build_first(&ws);
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(proxy.injected.load(Ordering::SeqCst), 1);
        let tag = first_item(&out.stdout, "tag");
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{tag}"));
        (ws, proxy, out)
    }

    #[test]
    fn chunked_uploads_resume_where_the_registry_got_to() {
        let reg = Registry::start();
        // The second chunk's connection drops before the registry sees any of it.
        let (_ws, _proxy, out) = chunked(
            &reg,
            Fault::ResetAfter {
                method: "PATCH",
                path: "/blobs/uploads/",
                skip: 1,
                bytes: 0,
                times: 1,
            },
        );
        assert!(
            out.stderr.contains("resuming at byte 5242880"),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("starting the upload again"),
            "resumed, not restarted: {}",
            out.stderr
        );
    }

    /// A fresh build streams each layer to the registry while it is
    /// compressed: `PATCH` chunks with `Content-Range`, then the digest.
    #[test]
    fn a_fresh_build_uploads_its_layer_while_it_compresses() {
        let reg = Registry::start();
        let ws = Workspace::with_catalog(&one_target(&reg.addr));
        noise_disk(&ws, 20);
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            out.stderr.contains("uploaded while it was written"),
            "{}",
            out.stderr
        );
        let log = reg.access_log();
        let patches = log
            .lines()
            .filter(|l| l.contains("\"PATCH /v2/ci/disk/blobs/uploads/"))
            .count();
        assert!(patches >= 3, "20 MiB in 8 MiB chunks: {log}");
        // Nothing went up twice: the copy after the build found the layer there.
        assert!(!out.stderr.contains("MiB) in"), "{}", out.stderr);
        let tag = first_item(&out.stdout, "tag");
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{tag}"));
    }

    /// A streamed upload that fails is not an error: the layer is uploaded
    /// from the store after the build, with retries and resume.
    #[test]
    fn a_failed_stream_falls_back_to_the_upload_from_the_store() {
        let reg = Registry::start();
        let proxy = FaultProxy::start(
            &reg.addr,
            vec![Fault::ResetAfter {
                method: "PATCH",
                path: "/blobs/uploads/",
                skip: 1,
                bytes: 1 << 20,
                times: 1,
            }],
        );
        let ws = Workspace::with_catalog(&one_target(&proxy.addr));
        noise_disk(&ws, 20);
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(proxy.injected.load(Ordering::SeqCst), 1);
        assert!(
            out.stderr.contains("it is uploaded from the store"),
            "{}",
            out.stderr
        );
        let tag = first_item(&out.stdout, "tag");
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{tag}"));
    }

    #[test]
    fn a_chunk_cut_half_way_restarts_when_the_registry_drops_the_session() {
        let reg = Registry::start();
        // Distribution invalidates a session whose chunk was cut short: start over.
        let (_ws, _proxy, out) = chunked(
            &reg,
            Fault::ResetAfter {
                method: "PATCH",
                path: "/blobs/uploads/",
                skip: 1,
                bytes: 3 << 20,
                times: 1,
            },
        );
        assert!(
            out.stderr.contains("starting the upload again"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn client_errors_are_not_retried_and_the_error_names_everything() {
        let reg = Registry::start();
        let (ws, proxy) = setup(
            &reg,
            vec![Fault::Status {
                method: "PUT",
                path: "/manifests/",
                status: 400,
                retry_after: None,
                times: 50,
            }],
        );
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 1);
        assert_eq!(proxy.injected.load(Ordering::SeqCst), 1, "a 400 is final");
        assert!(
            out.stderr
                .contains(&format!("{}/ci/disk: manifest PUT", proxy.addr)),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("HTTP 400"), "{}", out.stderr);
    }

    #[test]
    fn persistent_failures_end_with_a_clear_error() {
        let reg = Registry::start();
        let (ws, proxy) = setup(
            &reg,
            vec![Fault::Status {
                method: "HEAD",
                path: "/blobs/",
                status: 503,
                retry_after: None,
                times: 1000,
            }],
        );
        let out = publish(&ws, &[]);
        assert_eq!(out.code, 1);
        // Every one of the default 6 attempts was made before giving up.
        let injected = proxy.injected.load(Ordering::SeqCst);
        assert!(injected >= 6, "{injected} attempts");
        assert!(
            out.stderr.contains("blob HEAD") && out.stderr.contains("HTTP 503"),
            "{}",
            out.stderr
        );
    }
}

#[test]
fn a_registry_killed_mid_upload_then_restarted_completes_on_rerun() {
    let mut reg = Registry::start();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n    compression: none\n",
        reg.addr
    ));
    noise_disk(&ws, 256);
    let mut c = ws.cmd();
    c.arg("build");
    assert_eq!(run(c).code, 0);
    // No retries in the first run, so the kill cannot be papered over.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("imagepipe"))
        .args(["publish", "--format", "json"])
        .env("IMAGEPIPE_RETRIES", "1")
        .current_dir(ws.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the registry once part of the 256 MiB blob has arrived, then bring it back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while reg.upload_in_progress("ci/disk") < 1 << 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "publish ended before the registry was killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    reg.restart();
    let first = child.wait_with_output().unwrap();
    let first_err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(1), "first run: {first_err}");
    assert_eq!(
        remote_digest(&reg.addr, "ci/disk", "latest"),
        None,
        "an interrupted run leaves no tag"
    );
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 0, "first run: {first_err}\nrerun: {}", out.stderr);
    let tag = first_item(&out.stdout, "tag");
    for t in [tag.as_str(), "latest"] {
        skopeo_pull(&ws, &reg.addr, &format!("ci/disk:{t}"));
    }
}

#[test]
fn a_rerun_with_nothing_to_do_costs_two_requests_per_image_and_target() {
    let reg = Registry::start();
    let proxy = crate::fault_proxy::FaultProxy::start(&reg.addr, Vec::new());
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        proxy.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    assert_eq!(publish(&ws, &[]).code, 0);
    let before = proxy.requests.load(std::sync::atomic::Ordering::SeqCst);
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let used = proxy.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(used <= 2, "a no-op rerun made {used} requests");
}

#[test]
fn tls_is_verified_against_the_hosts_ca() {
    let (reg, ca) = Registry::start_tls();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        reg.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let certs = ws.path().join("certs.d");
    // Without the CA: refused, and said why.
    let mut c = ws.cmd();
    c.args(["publish"]).env("IMAGEPIPE_CERTS_DIR", &certs);
    let out = run(c);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!("certs.d/{}/ca.crt", reg.addr)),
        "the error says where the CA goes: {}",
        out.stderr
    );
    // With the CA in certs.d/<host>/: published, and skopeo agrees.
    std::fs::create_dir_all(certs.join(&reg.addr)).unwrap();
    std::fs::copy(&ca, certs.join(&reg.addr).join("ca.crt")).unwrap();
    publish_trusting(&ws, &certs, &reg.addr);
}

/// Publishes with `certs` as IMAGEPIPE_CERTS_DIR, and reads the image back
/// with skopeo trusting the same directory.
fn publish_trusting(ws: &Workspace, certs: &std::path::Path, addr: &str) {
    let mut c = ws.cmd();
    c.args(["publish", "--format", "json"])
        .env("IMAGEPIPE_CERTS_DIR", certs);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tag = first_item(&out.stdout, "tag");
    sh(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            certs.join(addr).to_str().unwrap(),
            &format!("docker://{addr}/ci/disk:{tag}"),
        ],
        ws.path(),
    );
}

mod bearer {
    use super::*;
    use crate::fault_proxy::{FaultProxy, TokenAuth};
    use std::os::unix::fs::PermissionsExt;

    fn two_namespaces(addr: &str) -> String {
        format!(
            "version: 1\ntargets:\n  - {{ name: a, registry: \"{addr}\", namespace: one, insecure: true }}\n  - {{ name: b, registry: \"{addr}\", namespace: two, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n"
        )
    }

    fn run_with(
        ws: &Workspace,
        env: &[(&str, &std::path::Path)],
        args: &[&str],
    ) -> crate::common::Output {
        let mut c = ws.cmd();
        c.args(args).env("SOURCE_DATE_EPOCH", "1");
        for (k, v) in env {
            c.env(k, v);
        }
        run(c)
    }

    #[test]
    fn token_flow_with_reauth_and_mount_scopes() {
        let reg = Registry::start();
        let proxy = FaultProxy::start_with_auth(
            &reg.addr,
            Vec::new(),
            TokenAuth::new("ci", "t0ken-Pa55", "", 3),
        );
        let ws = Workspace::with_catalog(&two_namespaces(&proxy.addr));
        qcow2(&ws, "disk.qcow2", "4M");
        ws.write(
            "docker/config.json",
            format!(
                r#"{{"auths":{{"{}":{{"username":"ci","password":"t0ken-Pa55"}}}}}}"#,
                proxy.addr
            ),
        );
        let out = run_with(
            &ws,
            &[("DOCKER_CONFIG", &ws.path().join("docker"))],
            &["publish", "--format", "json"],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(!out.stderr.contains("t0ken-Pa55") && !out.stdout.contains("t0ken-Pa55"));
        let auth = proxy.auth.lock().unwrap();
        let scopes = &auth.as_ref().unwrap().scopes;
        assert!(
            scopes.iter().any(|s| s == "repository:one/disk:pull,push"),
            "{scopes:?}"
        );
        // Tokens expire after 3 uses: more tokens were fetched than scopes needed.
        assert!(scopes.len() > 3, "re-authenticated mid-run: {scopes:?}");
        // The second repository mounts from the first: its token also asks to pull the source.
        assert!(
            scopes
                .iter()
                .any(|s| s.contains("repository:two/disk:pull,push")
                    && s.contains("repository:one/disk:pull")),
            "{scopes:?}"
        );
    }

    #[test]
    fn identity_tokens_are_exchanged_for_access_tokens() {
        let reg = Registry::start();
        let proxy = FaultProxy::start_with_auth(
            &reg.addr,
            Vec::new(),
            TokenAuth::new("-", "-", "refresh-me", 0),
        );
        let ws = Workspace::with_catalog(&two_namespaces(&proxy.addr));
        qcow2(&ws, "disk.qcow2", "4M");
        ws.write(
            "docker/config.json",
            format!(
                r#"{{"auths":{{"{}":{{"identitytoken":"refresh-me"}}}}}}"#,
                proxy.addr
            ),
        );
        let out = run_with(
            &ws,
            &[("DOCKER_CONFIG", &ws.path().join("docker"))],
            &["publish"],
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(!out.stderr.contains("refresh-me"));
        // A wrong one fails clearly.
        ws.write(
            "docker/config.json",
            format!(
                r#"{{"auths":{{"{}":{{"identitytoken":"stale"}}}}}}"#,
                proxy.addr
            ),
        );
        let out = run_with(
            &ws,
            &[("DOCKER_CONFIG", &ws.path().join("docker"))],
            &["publish", "--force"],
        );
        assert_eq!(out.code, 1);
        assert!(
            out.stderr.contains("token endpoint") && out.stderr.contains("check the credentials"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn credential_helpers_and_registry_auth_file() {
        let reg = Registry::start();
        let proxy = FaultProxy::start_with_auth(
            &reg.addr,
            Vec::new(),
            TokenAuth::new("helper-user", "helper-secret", "", 0),
        );
        let ws = Workspace::with_catalog(&two_namespaces(&proxy.addr));
        qcow2(&ws, "disk.qcow2", "4M");
        let bin = ws.path().join("bin");
        ws.write(
            "bin/docker-credential-imagepipetest",
            "#!/bin/sh\nread host\necho \"$host\" >> \"$(dirname \"$0\")/asked\"\necho '{\"ServerURL\":\"'\"$host\"'\",\"Username\":\"helper-user\",\"Secret\":\"helper-secret\"}'\n",
        );
        std::fs::set_permissions(
            bin.join("docker-credential-imagepipetest"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        ws.write(
            "docker/config.json",
            format!(r#"{{"credHelpers":{{"{}":"imagepipetest"}}}}"#, proxy.addr),
        );
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let mut c = ws.cmd();
        c.args(["publish"])
            .env("SOURCE_DATE_EPOCH", "1")
            .env("DOCKER_CONFIG", ws.path().join("docker"))
            .env("PATH", &path);
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert!(
            std::fs::read_to_string(bin.join("asked"))
                .unwrap()
                .contains(&proxy.addr)
        );
        assert!(!out.stderr.contains("helper-secret"));
        // podman/skopeo's auth file, named by REGISTRY_AUTH_FILE, comes first.
        let auth = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("helper-user:helper-secret")
        };
        ws.write(
            "auth.json",
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, proxy.addr),
        );
        let mut c = ws.cmd();
        c.args(["publish", "--force"])
            .env("SOURCE_DATE_EPOCH", "2")
            .env("REGISTRY_AUTH_FILE", ws.path().join("auth.json"))
            .env("DOCKER_CONFIG", ws.path().join("nowhere"));
        let out = run(c);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
}

#[test]
fn a_second_repository_on_the_same_registry_gets_blobs_by_mount() {
    let reg = Registry::start();
    let proxy = crate::fault_proxy::FaultProxy::start(&reg.addr, Vec::new());
    let one = format!(
        "version: 1\ntargets:\n  - {{ name: a, registry: \"{}\", namespace: one, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        proxy.addr
    );
    let ws = Workspace::with_catalog(&one);
    qcow2(&ws, "disk.qcow2", "4M");
    assert_eq!(publish(&ws, &[]).code, 0);
    // Later a second region/namespace on the same registry is added.
    let two = one.replace(
        "images:",
        &format!(
            "  - {{ name: b, registry: \"{}\", namespace: two, insecure: true }}\nimages:",
            proxy.addr
        ),
    );
    ws.write("images.yml", two);
    proxy.log.lock().unwrap().clear();
    let out = publish(&ws, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let log = proxy.log.lock().unwrap().clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("POST /v2/two/disk/blobs/uploads/?mount=")
                && l.contains("from=one/disk")),
        "{log:?}"
    );
    assert!(
        !log.iter()
            .any(|l| l.starts_with("PUT /v2/two/disk/blobs/uploads/") || l.starts_with("PATCH")),
        "no blob was uploaded again: {log:?}"
    );
}

#[test]
fn referrers_are_read_where_offered() {
    use imagepipe::registry::{Client, Repository, auth::Keychain};
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = publish(&ws, &["--target", "eu"]);
    let digest: imagepipe::oci::Digest =
        serde_json::from_str::<Value>(&out.stdout).unwrap()["items"][0]["digest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    let client = Client::new(Keychain::from_files(Vec::new()));
    let repo = Repository {
        host: reg.addr.clone(),
        path: "eu/k8s/disk".into(),
        insecure: true,
        chunk_size: None,
    };
    // Distribution 2.8 has no referrers API: reported as not offered, not as an error.
    assert_eq!(client.referrers(&repo, &digest).unwrap(), None);
    // A registry that offers it (played by a tiny server) gives the list.
    let server = crate::common::FileServer::start();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "b".repeat(64)), "size": 10, "artifactType": "application/spdx+json" }
    ] });
    server.put(
        &format!("/v2/eu/k8s/disk/referrers/{digest}"),
        index.to_string(),
    );
    let offered = Repository {
        host: server.base.trim_start_matches("http://").to_owned(),
        ..repo
    };
    let list = client.referrers(&offered, &digest).unwrap().unwrap();
    assert_eq!(
        list[0].artifact_type.as_deref(),
        Some("application/spdx+json")
    );
}

/// The registry flags skopeo, crane and regctl users type: `--creds`,
/// `--creds-stdin`, `--authfile`, `--cert-dir`; offered only by the commands
/// that talk to registries.
#[test]
fn registry_flags_as_skopeo_users_type_them() {
    let password = "flag-Pa55";
    let reg = Registry::start_with_auth("ci", password);
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "4M");
    let out = publish(
        &ws,
        &["--target", "eu", "--creds", &format!("ci:{password}")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains(password));
    let mut c = ws.cmd();
    c.args([
        "publish",
        "--format",
        "json",
        "--target",
        "us",
        "--creds-stdin",
    ])
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .write_stdin(format!("ci:{password}\n"));
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let auth = ws.write(
        "auth.json",
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.addr,
            base64_encode(&format!("ci:{password}"))
        ),
    );
    let mut c = ws.cmd();
    c.args(["plan", "--format", "json", "--authfile"])
        .arg(&auth)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // With the file's credentials the plan reads the registry: both
    // targets hold the image (their `latest` is still to move).
    assert!(!out.stdout.contains("state-unknown"), "{}", out.stdout);
    assert_eq!(
        out.stdout.matches("\"present\": true").count(),
        3,
        "{}",
        out.stdout
    );
    let bad = publish(&ws, &["--creds", "no-colon"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    for (cmd, offered) in [
        ("publish", true),
        ("cleanup", true),
        ("validate", false),
        ("build", false),
    ] {
        let mut c = ws.cmd();
        c.args([cmd, "--help"]);
        let help = run(c).stdout;
        assert_eq!(help.contains("--creds"), offered, "{cmd}");
        assert_eq!(help.contains("--cert-dir"), offered, "{cmd}");
    }
    // --cert-dir, against a TLS registry.
    let (tls, ca) = Registry::start_tls();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        tls.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let dir = ws.path().join("my-certs");
    std::fs::create_dir_all(dir.join(&tls.addr)).unwrap();
    std::fs::copy(&ca, dir.join(&tls.addr).join("ca.crt")).unwrap();
    let mut c = ws.cmd();
    c.arg("publish").arg("--cert-dir").arg(&dir);
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

/// A registry's own self-signed certificate (`openssl req -x509`, `CA:TRUE`)
/// in `certs.d/<host>/` is trusted as skopeo trusts it; another one is not.
#[test]
fn a_self_signed_certificate_in_certs_d_is_trusted_like_skopeo_does() {
    let (reg, crt) = Registry::start_tls_self_signed();
    let ws = Workspace::with_catalog(&format!(
        "version: 1\ntargets:\n  - {{ name: r, registry: \"{}\", namespace: ci }}\nimages:\n  - name: disk\n    os: {{ distro: x, version: \"1\" }}\n    source: {{ file: disk.qcow2 }}\n    format: containerdisk\n",
        reg.addr
    ));
    qcow2(&ws, "disk.qcow2", "4M");
    let certs = ws.path().join("certs.d");
    std::fs::create_dir_all(certs.join(&reg.addr)).unwrap();
    // Someone else's self-signed certificate there: refused.
    let (other, other_crt) = Registry::start_tls_self_signed();
    std::fs::copy(&other_crt, certs.join(&reg.addr).join("ca.crt")).unwrap();
    drop(other);
    let mut c = ws.cmd();
    c.args(["plan"]).env("IMAGEPIPE_CERTS_DIR", &certs);
    let out = run(c);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    // Its own: published, and skopeo agrees.
    std::fs::copy(&crt, certs.join(&reg.addr).join("ca.crt")).unwrap();
    publish_trusting(&ws, &certs, &reg.addr);
}

#[test]
fn metadata_file_records_every_reference_and_digest() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr, ""));
    qcow2(&ws, "disk.qcow2", "8M");
    // A directory that does not exist is refused before anything is pushed.
    let mut c = ws.cmd();
    c.args(["publish", "--metadata-file", "missing/meta.json"]);
    let out = run(c);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("missing"), "{}", out.stderr);
    assert!(!ws.path().join(".imagepipe/store").exists());
    std::fs::create_dir(ws.path().join("out")).unwrap();
    let mut c = ws.cmd();
    c.args(["publish", "--metadata-file", "out/meta.json"])
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let out = run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The table still goes to stdout; the file holds the same facts as JSON.
    assert!(out.stdout.contains("REFERENCE"), "{}", out.stdout);
    let v: Value =
        serde_json::from_slice(&std::fs::read(ws.path().join("out/meta.json")).unwrap()).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    let mut on_registry = 0;
    for item in items {
        let tag = item["tag"].as_str().unwrap();
        let digest = item["digest"].as_str().unwrap();
        assert!(out.stdout.contains(digest), "{}", out.stdout);
        let reference = item["reference"].as_str().unwrap();
        if let Some(rest) = reference.strip_prefix(&format!("{}/", reg.addr)) {
            let repo = rest.strip_suffix(&format!(":{tag}")).unwrap();
            assert_eq!(
                remote_digest(&reg.addr, repo, tag).map(|d| format!("sha256:{d}")),
                Some(digest.to_owned()),
                "{reference}"
            );
            on_registry += 1;
        }
    }
    assert_eq!(on_registry, 2, "{v}");
    assert!(
        std::fs::read_dir(ws.path().join("out"))
            .unwrap()
            .all(|e| e.unwrap().file_name() == "meta.json"),
        "no temp file is left beside it"
    );
}

//! Two runners, one immutable tag (SPEC §3). A pinned builder whose output
//! is not bit-reproducible (as Packer's usually is not) gives one recipe two
//! digests; when two runs publish at once, one of them wins, the other
//! exits 1 naming both digests, and the winner's tag is left alone.

use std::sync::{Arc, Mutex};

use crate::common::{Workspace, run, sh};
use crate::fault_proxy::{Fault, FaultProxy, Hook};
use crate::registry_fixture::Registry;

/// One image from a builder that writes random bytes: one recipe, another
/// digest at every build.
fn catalog(registry: &str) -> String {
    format!(
        "version: 1\ntargets:\n  - {{ name: ci, registry: \"{registry}\", namespace: ci, insecure: true }}\nimages:\n  - name: vm\n    os: {{ distro: debian, version: \"12\" }}\n    source:\n      command:\n        run: [sh, -c, 'head -c 1048576 /dev/urandom > \"$IMAGEPIPE_OUTPUT_DIR/disk.raw\"']\n    format: containerdisk\n"
    )
}

fn imagepipe(ws: &Workspace, args: &[&str]) -> crate::common::Output {
    let mut c = ws.cmd();
    c.args(args);
    run(c)
}

/// The digest `ci/vm:tag` names on the registry.
fn digest_of(reg: &Registry, tag: &str) -> String {
    let out = sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/ci/vm:{tag}", reg.addr),
        ],
        std::path::Path::new("/"),
    );
    format!("sha256:{}", crate::common::sha256_hex(out.as_bytes()))
}

fn immutable_tag(ws: &Workspace) -> String {
    let out = imagepipe(ws, &["plan", "--format", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    crate::common::first_item(&out.stdout, "tag")
}

#[test]
fn a_tag_pushed_by_another_run_during_the_upload_is_left_alone() {
    let reg = Registry::start();
    let other = Arc::new(Workspace::with_catalog(&catalog(&reg.addr)));
    let other_out = Arc::new(Mutex::new(None));
    // While this run starts its first upload, the other run publishes the
    // same recipe, with other bytes, straight to the registry.
    let (o, out) = (other.clone(), other_out.clone());
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Fault::Hook {
            method: "POST",
            path: "/blobs/uploads/",
            after: false,
            hook: Hook::new(move || {
                *out.lock().unwrap() = Some(imagepipe(&o, &["publish"]));
            }),
        }],
    );
    let ws = Workspace::with_catalog(&catalog(&proxy.addr));
    let tag = immutable_tag(&ws);
    assert_eq!(tag, immutable_tag(&other), "one recipe, one tag");
    let out = imagepipe(&ws, &["publish"]);
    let first = other_out.lock().unwrap().take().expect("the other run ran");
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let winner = digest_of(&reg, &tag);
    let ours = local_digest(&ws, &tag);
    assert_ne!(winner, ours);
    for said in [&winner, &ours, "not bit-reproducible"] {
        assert!(out.stderr.contains(said), "no {said} in {}", out.stderr);
    }
}

/// The digest `tag` names in the local store of `ws`.
fn local_digest(ws: &Workspace, tag: &str) -> String {
    let layout = ws.path().join(".imagepipe/store/vm");
    let out = sh(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{tag}", layout.display()),
        ],
        std::path::Path::new("/"),
    );
    format!("sha256:{}", crate::common::sha256_hex(out.as_bytes()))
}

#[test]
fn a_tag_overwritten_at_the_same_moment_is_noticed_and_left_alone() {
    let reg = Registry::start();
    // The other run's image, built and ready to push.
    let other = Workspace::with_catalog(&catalog(&reg.addr));
    let built = imagepipe(&other, &["build"]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let tag = built.stdout.split_whitespace().nth(1).unwrap().to_owned();
    let theirs = built.stdout.split_whitespace().nth(2).unwrap().to_owned();
    let layout = other.path().join(".imagepipe/store/vm");
    let (src, dst) = (
        format!("oci:{}:{tag}", layout.display()),
        format!("docker://{}/ci/vm:{tag}", reg.addr),
    );
    // Right after this run's tag PUT reaches the registry, the other run's
    // PUT of the same tag lands.
    let proxy = FaultProxy::start(
        &reg.addr,
        vec![Fault::Hook {
            method: "PUT",
            path: Box::leak(format!("/manifests/{tag}").into_boxed_str()),
            after: true,
            hook: Hook::new(move || {
                sh(
                    "skopeo",
                    &["copy", "-q", "--dest-tls-verify=false", &src, &dst],
                    std::path::Path::new("/"),
                );
            }),
        }],
    );
    let ws = Workspace::with_catalog(&catalog(&proxy.addr));
    let out = imagepipe(&ws, &["publish"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(digest_of(&reg, &tag), theirs, "the other run's tag stays");
    let ours = local_digest(&ws, &tag);
    for said in [
        &theirs,
        &ours,
        "right after this run wrote",
        "not bit-reproducible",
    ] {
        assert!(out.stderr.contains(said), "no {said} in {}", out.stderr);
    }
    // `latest` did not move for the run that lost.
    let tags = crate::common::image_tags(&reg.addr, "ci/vm");
    assert!(!tags.contains(&"latest".to_owned()), "{tags:?}");
}

//! `imagepipe cleanup` of an OCI layout target: the same retention as a
//! registry, tags removed from `index.json`, attestations and blobs of the
//! removed images collected, what is kept readable by skopeo.

use serde_json::Value;

use crate::cleanup::{OLD, cleanup, decision};
use crate::common::{Workspace, sh};

const CATALOG: &str = "version: 1\ntargets:\n  - { name: local, layout: store }\nimages:\n  - name: disk\n    os: { distro: x, version: \"1\" }\n    source: { file: disk.raw }\n    format: containerdisk\n    compression: none\nretention:\n  keep_last: 1\n  max_delete: 10\n";

fn build_version(ws: &Workspace, n: u8, epoch: i64) -> (String, String) {
    crate::cleanup::version(ws, "build", n, epoch)
}

fn index(ws: &Workspace) -> Value {
    serde_json::from_slice(&std::fs::read(ws.path().join("store/disk/index.json")).unwrap())
        .unwrap()
}

fn blobs(ws: &Workspace) -> Vec<String> {
    let mut b: Vec<String> = std::fs::read_dir(ws.path().join("store/disk/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    b.sort();
    b
}

#[test]
fn a_layout_target_is_cleaned_like_a_registry_and_its_garbage_collected() {
    let ws = Workspace::with_catalog(CATALOG);
    let (old_tag, old_digest) = build_version(&ws, 1, OLD);
    let (new_tag, new_digest) = build_version(&ws, 2, OLD + 86_400);
    let old_hex = old_digest.trim_start_matches("sha256:").to_owned();
    assert!(blobs(&ws).contains(&old_hex));
    // Each image has its provenance attestation listed in index.json.
    let subjects = |v: &Value| -> Vec<String> {
        v["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["annotations"]["io.imagepipe.subject"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    };
    let attested = subjects(&index(&ws));
    assert!(attested.contains(&old_digest), "{attested:?}");

    // The dry run: the same decisions and reasons as on a registry; nothing removed.
    let (code, plan, stderr) = cleanup(&ws, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(decision(&plan, &old_tag)["decision"], "delete", "{plan}");
    assert_eq!(decision(&plan, &new_tag)["decision"], "keep", "{plan}");
    assert!(
        plan["items"][0]["repository"]
            .as_str()
            .unwrap()
            .starts_with("oci:"),
        "{plan}"
    );
    assert!(blobs(&ws).contains(&old_hex));

    let (code, done, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    let applied = &done["applied"][0];
    assert_eq!(applied["tag"], old_tag.as_str(), "{done}");
    assert_eq!(applied["result"], "untagged", "{done}");
    let collected = &done["collected"][0]["collected"];
    assert!(collected["blobs"].as_u64().unwrap() >= 3, "{done}");
    assert_eq!(collected["referrers"], 1, "{done}");

    // The old tag, its attestation and every blob only it used are gone…
    let idx = index(&ws);
    let tags: Vec<&str> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str())
        .collect();
    assert!(!tags.contains(&old_tag.as_str()), "{idx}");
    assert!(!subjects(&idx).contains(&old_digest), "{idx}");
    assert!(subjects(&idx).contains(&new_digest), "{idx}");
    let after = blobs(&ws);
    assert!(!after.contains(&old_hex));
    // …and what is kept is whole: skopeo copies it out, every blob checked.
    sh(
        "skopeo",
        &["copy", &format!("oci:store/disk:{new_tag}"), "dir:out"],
        ws.path(),
    );
    // A second cleanup has nothing to do.
    let (code, again, stderr) = cleanup(&ws, &["--apply"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(again["applied"], serde_json::json!([]), "{again}");
}

#[test]
fn a_build_writing_to_the_layout_holds_off_its_garbage_collection() {
    use imagepipe::store::layout::Layout;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::create(&dir.path().join("disk")).unwrap();
    // A blob written and not yet tagged, as a build leaves it mid-way.
    let (digest, _) = layout.put_bytes(b"a layer of a build in progress").unwrap();
    let other = Layout::at(&dir.path().join("disk"));
    assert_eq!(other.collect_garbage().unwrap(), None, "a writer is active");
    assert!(layout.has_blob(&digest));
    drop(layout);
    let collected = other
        .collect_garbage()
        .unwrap()
        .expect("no writer any more");
    assert_eq!(collected.blobs, 1);
    assert!(!other.has_blob(&digest));
}

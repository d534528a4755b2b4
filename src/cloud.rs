//! Machine images in cloud regions (the Cluster API node-image flow): one
//! Packer build per region, the same image name everywhere, results recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::builder::build_env;
use crate::catalog::{Catalog, Image, Source, Target, TargetKind};
use crate::plan::{Action, Identity, PlanItem, Presence, Reach, StoreState};
use crate::recipe::RunContext;
use crate::source::fetch::{Dirs, PackerRun, packer_build, packer_last_build};

/// Where publish records machine images: `.imagepipe/machine-images.json` next to the catalog.
pub fn results_path(base: &Path) -> PathBuf {
    base.join(".imagepipe").join("machine-images.json")
}

/// One region's machine image.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub image: String,
    pub target: String,
    pub provider: String,
    pub region: String,
    /// The image name, identical in every region (the immutable tag).
    pub name: String,
    /// What Packer's manifest says, e.g. `eu-west-2:ami-0123…`.
    pub artifact_id: Option<String>,
    pub error: Option<String>,
}

/// The machine images a `publish --metadata-file` FILE lists, for the
/// catalog's cloud targets (a region job's artifact, read by a release job
/// on another runner), keyed `image/target`.
pub fn read_metadata(file: &Path, targets: &[Target]) -> Result<BTreeMap<String, Record>, String> {
    let text = std::fs::read(file)
        .map_err(|e| format!("{}: {}", file.display(), crate::io_reason::io_reason(&e)))?;
    let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: not a `publish --metadata-file` output: {e}",
            file.display()
        )
    })?;
    let items = v["items"].as_array().ok_or_else(|| {
        format!(
            "{}: not a `publish --metadata-file` output: no `items`",
            file.display()
        )
    })?;
    let mut out = BTreeMap::new();
    for item in items {
        let field = |k: &str| item[k].as_str().map(str::to_owned);
        let (Some(image), Some(target), Some(name)) =
            (field("image"), field("target"), field("tag"))
        else {
            continue;
        };
        let Some(TargetKind::Cloud {
            provider, region, ..
        }) = targets
            .iter()
            .find(|t| t.name.value == target)
            .map(|t| &t.kind)
        else {
            continue;
        };
        let failed = item["outcome"] == "failed";
        out.insert(
            format!("{image}/{target}"),
            Record {
                image,
                target,
                provider: provider.clone(),
                region: region.clone(),
                name,
                artifact_id: if failed { None } else { field("reference") },
                error: if failed {
                    Some(field("error").unwrap_or_else(|| "failed".into()))
                } else {
                    None
                },
            },
        );
    }
    Ok(out)
}

/// The recorded results, keyed `image/target`.
pub fn read_results(base: &Path) -> BTreeMap<String, Record> {
    std::fs::read(results_path(base))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_results(base: &Path, records: &[Record]) -> Result<(), String> {
    let mut all = read_results(base);
    for r in records {
        all.insert(format!("{}/{}", r.image, r.target), r.clone());
    }
    let path = results_path(base);
    std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&all).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

fn region_env(target: &Target, name: &str) -> Vec<(String, String)> {
    let TargetKind::Cloud { env, region, .. } = &target.kind else {
        return Vec::new();
    };
    let mut v = env.clone();
    v.push(("IMAGEPIPE_IMAGE_NAME".into(), name.into()));
    v.push(("IMAGEPIPE_REGION".into(), region.clone()));
    v
}

/// What a region holds of the machine image `name`, for the plan: its
/// existence check's answer (not run offline), with the id it printed.
pub fn state(target: &Target, name: &str, base: &Path, reach: Reach) -> StoreState {
    let (immutable, image_id) = if reach == Reach::Offline {
        (
            Presence::Unknown("offline: the region's existence check was not run".into()),
            None,
        )
    } else {
        match exists(target, name, base) {
            Exists::Yes(id) => (Presence::Present(None), id),
            Exists::No => (Presence::Absent, None),
            Exists::Unknown(why) => (Presence::Unknown(why), None),
            // A check that cannot answer must not lead to a second image.
            Exists::Failed(why) => (Presence::Unreadable(why), None),
        }
    };
    StoreState {
        immutable,
        mutable: BTreeMap::new(),
        verified: None,
        recipe: None,
        image_id,
    }
}

/// What a region's existence check said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exists {
    /// It exists; the check printed its id (`ami-…`), when it did.
    Yes(Option<String>),
    No,
    /// No check configured.
    Unknown(String),
    /// The check ran and did not answer 0 or 1 (the text says how).
    Failed(String),
}

/// Runs the target's existence check for `name`: exit 0 present (the first
/// line it prints, if any, is the image's id), 1 absent; no check is
/// unknown, and anything else a failure of the check.
pub fn exists(target: &Target, name: &str, base: &Path) -> Exists {
    let TargetKind::Cloud {
        exists: Some(cmd),
        region,
        ..
    } = &target.kind
    else {
        return Exists::Unknown("no `exists` check for this region".into());
    };
    let args: Vec<String> = cmd
        .iter()
        .map(|a| a.replace("{image_name}", name).replace("{region}", region))
        .collect();
    let program = if args[0].contains('/') {
        base.join(&args[0]).display().to_string()
    } else {
        args[0].clone()
    };
    let out = Command::new(&program)
        .args(&args[1..])
        .current_dir(base)
        .envs(region_env(target, name))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let said = |why: String| {
        tracing::warn!(
            "{}: the existence check for {name} ({program}) {why}",
            target.name.value
        );
        Exists::Failed(format!("existence not known: the check {why}"))
    };
    match out {
        Ok(o) if o.status.code() == Some(0) => {
            let id = String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .filter(|l| l.len() <= 256 && !l.chars().any(char::is_control))
                .map(str::to_owned);
            Exists::Yes(id)
        }
        Ok(o) if o.status.code() == Some(1) => Exists::No,
        Ok(o) => match o.status.code() {
            Some(code) => said(format!("exited {code} (0: it exists, 1: it does not)")),
            None => said("was killed by a signal".into()),
        },
        Err(e) => said(format!(
            "could not run: {}",
            crate::io_reason::io_reason(&e)
        )),
    }
}

/// Executes a machine image's plan items: Packer builds it under the
/// immutable name in each region planned `build` (up to `jobs` at once); a
/// region planned `skip` has it (its id as the region's existence check
/// printed it, else an earlier record's). Every region's result is
/// recorded, failures included.
pub fn publish(
    catalog: &Catalog,
    image: &Image,
    id: &Identity,
    ctx: &RunContext,
    items: &[(&Target, &PlanItem)],
    jobs: usize,
) -> Vec<Record> {
    let base = catalog.base_dir();
    let name = id.tag.clone().unwrap_or_else(|| image.name.value.clone());
    let record = |t: &Target, artifact_id: Option<String>, error: Option<String>| {
        let TargetKind::Cloud {
            provider, region, ..
        } = &t.kind
        else {
            unreachable!("cloud targets only")
        };
        Record {
            image: image.name.value.clone(),
            target: t.name.value.clone(),
            provider: provider.clone(),
            region: region.clone(),
            name: name.clone(),
            artifact_id,
            error,
        }
    };
    let mut prior = read_results(&base);
    let mut out: Vec<Record> = Vec::new();
    let mut regions: Vec<&Target> = Vec::new();
    for (t, item) in items {
        if item.action == Action::Build {
            regions.push(t);
        } else {
            tracing::info!("{}: {name} already exists", t.name.value);
            let earlier = prior
                .remove(&format!("{}/{}", image.name.value, t.name.value))
                .filter(|r| r.name == name && r.error.is_none())
                .and_then(|r| r.artifact_id);
            let known = item.machine_image.clone().or(earlier);
            out.push(record(
                t,
                known.or_else(|| Some(format!("{name} (exists)"))),
                None,
            ));
        }
    }
    let packer = match image.platforms.first().map(|p| &p.source) {
        Some(Source::Packer(packer)) => packer,
        _ => {
            let why = "a machine image needs a `packer` source";
            out.extend(regions.iter().map(|t| record(t, None, Some(why.into()))));
            return out;
        }
    };
    let mut env = build_env(image, id, ctx);
    env.packer_vars
        .insert(packer.name_var().to_owned(), name.clone());
    let dirs = Dirs::new(&base);
    for chunk in regions.chunks(jobs.max(1)) {
        let results: Vec<Record> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|t| {
                    let (env, dirs, name) = (&env, &dirs, &name);
                    s.spawn(move || {
                        let mut region_vars = env.clone();
                        if let TargetKind::Cloud { region, .. } = &t.kind {
                            region_vars
                                .packer_vars
                                .insert("region".into(), region.clone());
                        }
                        tracing::info!("{}: building {name} with Packer", t.name.value);
                        let result = packer_build(packer, dirs, &region_vars, &region_env(t, name))
                            .and_then(artifact_id);
                        match result {
                            Ok(a) => record(t, Some(a), None),
                            Err(e) => record(t, None, Some(e.to_string())),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("region thread"))
                .collect()
        });
        out.extend(results);
    }
    if let Err(e) = write_results(&base, &out) {
        tracing::error!("recording results: {e}");
    }
    out
}

/// The machine image a Packer build made: its manifest post-processor's
/// last `artifact_id` when the template writes one, else the last artifact
/// id of Packer's machine-readable output (image-builder's templates have
/// no manifest post-processor).
fn artifact_id(run: PackerRun) -> Result<String, crate::source::error::SourceError> {
    let manifest = run.out.join("packer-manifest.json");
    if manifest.is_file() {
        let last = packer_last_build(&run.out)?;
        return last["artifact_id"]
            .as_str()
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .ok_or(crate::source::error::SourceError::PackerManifest {
                path: manifest,
                reason: "its last build has no artifact_id".into(),
            });
    }
    run.artifact_ids
        .last()
        .cloned()
        .ok_or(crate::source::error::SourceError::PackerManifest {
            path: manifest,
            reason: "there is none, and Packer reported no artifact id either (did the build make an image?)".into(),
        })
}

//! Boot verification: every disk image booted under QEMU with a cloud-init
//! NoCloud seed, the catalog's checks run in the guest, the result recorded
//! as an in-toto attestation referring to the image's digest (the same
//! referrer mechanism as the provenance), which `plan` and `publish` read
//! before moving the mutable tags of images that require verification.

pub mod batch;
pub mod console;
pub mod disk;
pub mod qemu;
pub mod seed;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use crate::catalog::{TCG_FACTOR, Verify};
use crate::oci::{Descriptor, rfc3339};
use crate::provenance::{self, PREDICATE_TYPE_ANNOTATION};
use crate::store::{Store, StoreError};
use qemu::{Accel, Ended};

/// The predicate type of verification attestations.
pub const PREDICATE: &str = "https://imagepipe.dev/verification/v1";
/// Referrer annotation with the result, `passed` or `failed`.
pub const RESULT_ANNOTATION: &str = "io.imagepipe.verification.result";
/// Serial console lines shown when a boot fails.
const TAIL_LINES: usize = 15;

/// Which accelerator to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM when /dev/kvm is usable and works, otherwise TCG.
    Auto,
    Kvm,
    Tcg,
}

/// One check's result.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct CheckResult {
    pub run: String,
    /// The rendered `expect`, if any.
    pub expect: Option<String>,
    /// `None`: the guest never reported it.
    pub exit: Option<i32>,
    pub output: String,
    pub passed: bool,
}

/// One image's verification.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Outcome {
    pub image: String,
    pub tag: String,
    pub digest: String,
    pub store: String,
    pub passed: bool,
    pub accel: Option<Accel>,
    pub seconds: f64,
    pub checks: Vec<CheckResult>,
    /// Why it failed, in one sentence.
    pub error: Option<String>,
    /// The last lines of the serial console, when it failed.
    pub console_tail: Vec<String>,
    /// Where the whole serial console is kept.
    pub serial_log: Option<PathBuf>,
    /// The attestation recording the result.
    pub attestation: Option<String>,
    /// Whether the guest was booted: only then is the result about the
    /// image (a missing QEMU or seed writer is about the machine) and recorded.
    #[serde(skip)]
    pub booted: bool,
}

impl Outcome {
    /// Not run yet: failed, nothing booted, nothing recorded.
    pub fn new(image: &str, tag: &str, top: &Descriptor, store: &dyn Store) -> Self {
        Self {
            image: image.to_owned(),
            tag: tag.to_owned(),
            digest: top.digest.to_string(),
            store: store.reference(),
            passed: false,
            accel: None,
            seconds: 0.0,
            checks: Vec::new(),
            error: None,
            console_tail: Vec::new(),
            serial_log: None,
            attestation: None,
            booted: false,
        }
    }
}

/// What one verification needs besides the image.
pub struct Job<'a> {
    pub store: &'a dyn Store,
    pub image: &'a str,
    pub tag: &'a str,
    pub top: &'a Descriptor,
    pub settings: &'a Verify,
    /// The checks' `expect`, rendered.
    pub expects: Vec<Option<String>>,
    /// Scratch directory (removed when the job ends).
    pub work: &'a Path,
    /// Where the serial log is kept.
    pub serial_log: PathBuf,
    pub accel: AccelChoice,
}

fn nonce() -> String {
    let seed = format!(
        "{}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
        std::thread::current().id()
    );
    crate::oci::hash::sha256_hex(seed.as_bytes())[..16].to_owned()
}

/// Boots one image and runs its checks; never leaves QEMU running.
pub fn run(job: &Job<'_>) -> Outcome {
    let started = Instant::now();
    let mut outcome = Outcome::new(job.image, job.tag, job.top, job.store);
    if let Err(e) = boot_and_check(job, &mut outcome) {
        outcome.error = Some(e);
    }
    outcome.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    outcome.passed = outcome.error.is_none() && outcome.checks.iter().all(|c| c.passed);
    if !outcome.passed && outcome.error.is_none() {
        let failed: Vec<&str> = outcome
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.run.as_str())
            .collect();
        outcome.error = Some(format!("check(s) failed: {}", failed.join("; ")));
    }
    outcome
}

fn boot_and_check(job: &Job<'_>, outcome: &mut Outcome) -> Result<(), String> {
    let manifest = disk::amd64_manifest(job.store, job.top)?;
    let disk = disk::extract(job.store, &manifest, job.work)?;
    // Checked again here: the store's bytes, not the build's, are booted.
    let checked = crate::builder::disk::check(&disk).map_err(|e| e.to_string())?;
    let nonce = nonce();
    let runs: Vec<String> = job.settings.checks.iter().map(|c| c.run.clone()).collect();
    let seed_dir = job.work.join("seed");
    std::fs::create_dir_all(&seed_dir).map_err(|e| e.to_string())?;
    std::fs::write(seed_dir.join("user-data"), seed::user_data(&nonce, &runs))
        .and_then(|()| std::fs::write(seed_dir.join("meta-data"), seed::meta_data(&nonce)))
        .map_err(|e| format!("writing the cloud-init seed: {e}"))?;
    let iso = job.work.join("seed.iso");
    seed::write_iso(&seed_dir, &iso)?;
    if let Some(parent) = job.serial_log.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut accels = match job.accel {
        AccelChoice::Kvm => vec![Accel::Kvm],
        AccelChoice::Tcg => vec![Accel::Tcg],
        AccelChoice::Auto if qemu::kvm_usable() => vec![Accel::Kvm, Accel::Tcg],
        AccelChoice::Auto => vec![Accel::Tcg],
    };
    let done = |console: &str| seed::parse(console, &nonce).1;
    let ended = loop {
        let accel = accels.remove(0);
        let timeout = match accel {
            Accel::Kvm => job.settings.timeout,
            Accel::Tcg => job.settings.timeout * TCG_FACTOR,
        };
        outcome.accel = Some(accel);
        let b = qemu::Boot {
            disk: &disk,
            disk_format: &checked.format,
            disk_size: checked.virtual_size,
            seed: &iso,
            dir: job.work,
            serial: &job.serial_log,
            prefix: &seed::prefix(&nonce),
            memory_mib: job.settings.memory_mib,
            firmware: job.settings.firmware,
            accel,
            timeout,
        };
        tracing::info!(
            "{}: booting {} under {} (timeout {}s)",
            job.image,
            job.tag,
            accel.as_str().to_uppercase(),
            timeout.as_secs()
        );
        let booted = qemu::boot(&b, done)?;
        match booted.ended {
            Ended::KvmBroken(why) if !accels.is_empty() => {
                tracing::warn!(
                    "{}: KVM does not work here ({why}); booting under TCG",
                    job.image
                );
            }
            _ => break (booted, timeout),
        }
    };
    let (booted, timeout) = ended;
    outcome.serial_log = Some(job.serial_log.clone());
    // A QEMU that exited before the guest wrote anything failed to start
    // (a machine problem, not the image's).
    outcome.booted = match &booted.ended {
        Ended::KvmBroken(_) | Ended::Interrupted => false,
        Ended::Exited(_) => booted.any_output,
        _ => true,
    };
    let (reports, _) = seed::parse(&booted.reports, &nonce);
    let failure = match (booted.ended, timeout) {
        (Ended::Done, _) => None,
        (Ended::Panic, _) => Some("the guest kernel panicked".to_owned()),
        (Ended::Exited(status), _) => Some(format!(
            "QEMU exited before the guest finished cloud-init ({status})"
        )),
        (Ended::Timeout, t) => Some(format!(
            "the guest did not finish cloud-init within {}s (no marker on the serial console): it did not boot, or cloud-init did not find the NoCloud seed",
            t.as_secs()
        )),
        (Ended::KvmBroken(why), _) => {
            Some(format!("KVM does not work here ({why}): use `--accel tcg`"))
        }
        (Ended::Interrupted, _) => Some("interrupted".to_owned()),
        (Ended::NothingToBoot(said), _) => Some(format!(
            "the firmware found nothing to boot ({said}): the disk has no working boot loader (check its partition table and boot loader, or `firmware: uefi` for a UEFI-only disk)"
        )),
    };
    for (i, check) in job.settings.checks.iter().enumerate() {
        let report = reports.get(i).cloned().flatten();
        let expect = job.expects.get(i).cloned().flatten();
        let passed = report.as_ref().is_some_and(|r| {
            r.exit == 0
                && expect
                    .as_ref()
                    .is_none_or(|e| r.output.contains(e.as_str()))
        });
        outcome.checks.push(CheckResult {
            run: check.run.clone(),
            expect,
            exit: report.as_ref().map(|r| r.exit),
            output: report
                .map(|r| r.output.trim_end().to_owned())
                .unwrap_or_default(),
            passed,
        });
    }
    if let Some(f) = failure {
        let tail = booted.tail.len().saturating_sub(TAIL_LINES);
        outcome.console_tail = booted.tail[tail..].to_vec();
        return Err(f);
    }
    Ok(())
}

/// Records `outcome` as an attestation referring to the image on `store`.
pub fn attest(
    store: &dyn Store,
    top: &Descriptor,
    outcome: &Outcome,
) -> Result<Descriptor, StoreError> {
    let now = provenance::now();
    let statement = json!({
        "_type": provenance::STATEMENT_TYPE,
        "subject": [{ "name": store.reference(), "digest": { "sha256": top.digest.hex() } }],
        "predicateType": PREDICATE,
        "predicate": {
            "result": if outcome.passed { "passed" } else { "failed" },
            "verifier": { "id": format!("imagepipe {}", env!("CARGO_PKG_VERSION")) },
            "image": outcome.image,
            "tag": outcome.tag,
            "accel": outcome.accel,
            "durationSeconds": outcome.seconds,
            "finishedOn": rfc3339(now),
            "checks": outcome.checks,
            "error": outcome.error,
        },
    });
    let result = if outcome.passed { "passed" } else { "failed" };
    provenance::attach_statement(
        store,
        top,
        &statement,
        PREDICATE,
        now,
        &[(RESULT_ANNOTATION, result.to_owned())],
    )
}

/// What a subject's referrers say of its verification: `Some(true)` when
/// one attestation records a pass, `Some(false)` when only failures are
/// recorded, `None` when it was never verified.
pub fn verdict(referrers: &[Descriptor]) -> Option<bool> {
    let results: Vec<&str> = referrers
        .iter()
        .filter(|d| {
            d.annotations
                .get(PREDICATE_TYPE_ANNOTATION)
                .map(String::as_str)
                == Some(PREDICATE)
        })
        .filter_map(|d| d.annotations.get(RESULT_ANNOTATION).map(String::as_str))
        .collect();
    if results.contains(&"passed") {
        Some(true)
    } else if results.is_empty() {
        None
    } else {
        Some(false)
    }
}

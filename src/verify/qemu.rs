//! One boot under QEMU: a copy-on-write overlay over the disk (the disk is
//! never written), the NoCloud seed as a CD-ROM, the serial console into a
//! file that is watched for the guest's reports. QEMU is killed when the
//! boot ends, whatever ends it (done, panic, timeout, an error, a signal).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::catalog::Firmware;

/// How the guest runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// The QEMU binary: `IMAGEPIPE_QEMU`, else `qemu-system-x86_64`.
pub fn binary() -> String {
    std::env::var(crate::env::IMAGEPIPE_QEMU)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "qemu-system-x86_64".into())
}

/// Whether KVM can be tried: /dev/kvm opens for reading and writing. (It
/// can still fail inside a VM without working nested virtualisation; the
/// boot then falls back to TCG.)
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// QEMU's own messages that mean KVM does not work here.
const KVM_BROKEN: &[&str] = &[
    "KVM internal error",
    "failed to initialize kvm",
    "Could not access KVM kernel module",
    "kvm_init_vcpu",
];

const OVMF_CODE: &[&str] = &[
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
    "/usr/share/qemu/OVMF.fd",
    "/usr/share/edk2/ovmf/OVMF_CODE.fd",
];

pub struct Boot<'a> {
    pub disk: &'a Path,
    pub disk_format: &'a str,
    /// The disk's virtual size (the overlay's).
    pub disk_size: u64,
    /// What the guest's report lines start with (this boot's nonce).
    pub prefix: &'a str,
    pub seed: &'a Path,
    pub dir: &'a Path,
    pub serial: &'a Path,
    pub memory_mib: u64,
    pub firmware: Firmware,
    pub accel: Accel,
    pub timeout: Duration,
}

/// How a boot ended.
#[derive(Debug)]
pub enum Ended {
    /// `done(console)` said so.
    Done,
    Panic,
    /// QEMU exited on its own (status, and its stderr).
    Exited(String),
    Timeout,
    /// KVM failed at start or while running.
    KvmBroken(String),
    /// The firmware found nothing it could boot (its messages).
    NothingToBoot(String),
    Interrupted,
}

/// Whether QEMU's messages say KVM failed (at start, or inside a VM whose
/// nested virtualisation does not work): the line that says so.
fn kvm_failure(accel: Accel, qemu_log: &str) -> Option<String> {
    if accel != Accel::Kvm {
        return None;
    }
    qemu_log
        .lines()
        .find(|l| {
            KVM_BROKEN.iter().any(|m| l.contains(m)) || l.contains("kvm_") || l.contains("/kvm/")
        })
        .map(|l| l.trim().to_owned())
}

/// Kills QEMU when dropped.
struct Running {
    child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::interrupt::unregister_child(self.child.id());
    }
}

fn ovmf(dir: &Path) -> Result<Vec<String>, String> {
    let code = match std::env::var_os(crate::env::IMAGEPIPE_OVMF) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                return Err(format!(
                    "UEFI firmware {} ({}) does not exist: install OVMF (Debian/Ubuntu: `apt-get install ovmf`) or fix the path",
                    p.display(),
                    crate::env::IMAGEPIPE_OVMF
                ));
            }
            p
        }
        _ => OVMF_CODE
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or("UEFI firmware (OVMF) not found: install it (Debian/Ubuntu: `apt-get install ovmf`), set IMAGEPIPE_OVMF to its OVMF_CODE file, or use `firmware: bios`")?,
    };
    let mut args = vec![
        "-drive".to_owned(),
        format!("if=pflash,format=raw,readonly=on,file={}", opt(&code)),
    ];
    let vars_src = code.to_string_lossy().replace("CODE", "VARS");
    if vars_src != code.to_string_lossy() && Path::new(&vars_src).is_file() {
        let vars = dir.join("OVMF_VARS.fd");
        std::fs::copy(&vars_src, &vars).map_err(|e| format!("{vars_src}: {e}"))?;
        args.push("-drive".into());
        args.push(format!("if=pflash,format=raw,file={}", opt(&vars)));
    }
    Ok(args)
}

/// The guest's disk as one `-blockdev` in JSON: the overlay over the disk,
/// both through the `file` driver (a name is only a name, never a protocol
/// or a `json:` description), and the disk with no backing file of its own
/// (`"backing": null`), so that QEMU cannot follow a reference inside it
/// even if one got past [`crate::builder::disk::check`].
fn blockdev(overlay: &Path, disk: &Path, disk_format: &str) -> Result<String, String> {
    let file = |p: &Path| -> Result<serde_json::Value, String> {
        let p = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let name = p
            .to_str()
            .ok_or_else(|| format!("{}: not a UTF-8 path", p.display()))?;
        Ok(serde_json::json!({ "driver": "file", "filename": name }))
    };
    let mut base = serde_json::json!({
        "driver": disk_format,
        "read-only": true,
        "file": file(disk)?,
    });
    if disk_format == "qcow2" {
        base["backing"] = serde_json::Value::Null;
    }
    Ok(serde_json::json!({
        "driver": "qcow2",
        "node-name": "root",
        "file": file(overlay)?,
        "backing": base,
    })
    .to_string())
}

/// Creates the overlay; returns its path.
fn overlay(b: &Boot<'_>) -> Result<PathBuf, String> {
    let overlay = b.dir.join(format!("overlay-{}.qcow2", b.accel.as_str()));
    let _ = std::fs::remove_file(&overlay);
    // `-u` with the size: qemu-img does not open the disk (nor anything it
    // might name).
    let out = Command::new("qemu-img")
        .args([
            "create",
            "-q",
            "-u",
            "-f",
            "qcow2",
            "-F",
            b.disk_format,
            "-b",
        ])
        .arg(std::path::absolute(b.disk).map_err(|e| e.to_string())?)
        .arg(&overlay)
        .arg(b.disk_size.to_string())
        .output()
        .map_err(|e| format!("qemu-img (install qemu-utils): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img create (overlay): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(overlay)
}

/// `program` started so that it dies with this process, even one killed
/// with SIGKILL: `setpriv --pdeathsig KILL` sets the parent-death signal,
/// then a shell checks that its parent is still this process (it may have
/// died before the signal was set) and runs the program in its place.
/// Without `setpriv` (util-linux), the program is started directly and
/// only a drop guard or a signal handler of ours ends it.
fn dies_with_us(program: &Path) -> Command {
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    let Some(setpriv) = setpriv else {
        return Command::new(program);
    };
    let mut c = Command::new(setpriv);
    c.args(["--pdeathsig", "KILL", "--", "/bin/sh", "-c"])
        .arg(r#"[ "$PPID" = "$0" ] || exit 97; exec "$@""#)
        .arg(std::process::id().to_string())
        .arg(program);
    c
}

/// `program` as the shell would find it: a path, or a name on `PATH`.
fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| runnable(p))
}

/// A path as a QEMU option value (commas doubled).
fn opt(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// How a boot ended, and what the console showed.
#[derive(Debug)]
pub struct Booted {
    pub ended: Ended,
    /// The console lines carrying the boot's nonce.
    pub reports: String,
    /// The console's last lines.
    pub tail: Vec<String>,
    /// The guest wrote anything to its console.
    pub any_output: bool,
}

/// SeaBIOS's last word when no disk (nor the seed) can be booted.
const NOTHING_TO_BOOT: &str = "No bootable device";

/// Boots and watches the console until `done(reports)` says the guest
/// finished. The console is QEMU's stdout, read once as it comes
/// ([`super::console`]); this run's log is written in its own scratch
/// directory and moved to `b.serial` at the end, so two runs of one image
/// never read each other's console.
pub fn boot(b: &Boot<'_>, done: impl Fn(&str) -> bool) -> Result<Booted, String> {
    let overlay = overlay(b)?;
    let qemu = binary();
    let accel = b.accel.as_str();
    let stderr_path = b.dir.join(format!("qemu-{accel}.log"));
    let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
    let part = b.dir.join(format!("serial-{accel}.log"));
    let log = std::fs::File::create(&part).map_err(|e| format!("{}: {e}", part.display()))?;
    let firmware_log = b.dir.join(format!("firmware-{accel}.log"));
    let mut cmd = dies_with_us(&find_program(&qemu).ok_or_else(|| {
        format!(
            "{qemu} not found: install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86`), or set {} to its path",
            crate::env::IMAGEPIPE_QEMU
        )
    })?);
    cmd.args(["-accel", accel]);
    if b.accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd.args(["-m", &b.memory_mib.to_string(), "-smp", "2"])
        .args(["-display", "none", "-no-reboot", "-nic", "none"])
        .args(["-serial", "stdio"])
        .args(["-blockdev", &blockdev(&overlay, b.disk, b.disk_format)?])
        .args(["-device", "virtio-blk-pci,drive=root"])
        .args([
            "-drive",
            &format!("file={},media=cdrom,readonly=on", opt(b.seed)),
        ]);
    if b.firmware == Firmware::Uefi {
        cmd.args(ovmf(b.dir)?);
    } else {
        // SeaBIOS's messages on its debug port, and no wait before it gives
        // up: a disk that cannot boot is known in a second, not at the timeout.
        cmd.args(["-boot", "reboot-timeout=0"])
            .args([
                "-chardev",
                &format!("file,id=firmware,path={}", opt(&firmware_log)),
            ])
            .args(["-device", "isa-debugcon,iobase=0x402,chardev=firmware"]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{qemu} not found: install QEMU (Debian/Ubuntu: `apt-get install qemu-system-x86`), or set {} to its path",
                crate::env::IMAGEPIPE_QEMU
            ),
            _ => format!("{qemu}: {e}"),
        })?;
    crate::interrupt::register_child(child.id());
    let stdout = child
        .stdout
        .take()
        .ok_or("QEMU's console is not readable")?;
    let seen = super::console::watch(stdout, log, b.prefix.to_owned());
    let mut running = Running { child };
    let ended = watch(b, &mut running, &seen, &done, &stderr_path, &firmware_log);
    // QEMU is killed; the console ends with it.
    drop(running);
    let started = Instant::now();
    while !seen.lock().map(|s| s.ended).unwrap_or(true)
        && started.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if std::fs::rename(&part, b.serial).is_err() {
        std::fs::copy(&part, b.serial).map_err(|e| format!("{}: {e}", b.serial.display()))?;
    }
    let s = seen.lock().map_err(|_| "the console reader failed")?;
    Ok(Booted {
        ended,
        reports: s.reports.clone(),
        tail: s.tail.iter().cloned().collect(),
        any_output: s.any,
    })
}

/// Waits for the end of a boot, whatever ends it.
fn watch(
    b: &Boot<'_>,
    running: &mut Running,
    seen: &std::sync::Mutex<super::console::Seen>,
    done: &impl Fn(&str) -> bool,
    stderr_path: &Path,
    firmware_log: &Path,
) -> Ended {
    let finished = || {
        seen.lock()
            .map(|s| (done(&s.reports), s.panicked, s.ended))
            .unwrap_or((false, false, true))
    };
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let (is_done, panicked, _) = finished();
        if is_done {
            return Ended::Done;
        }
        if panicked {
            // Let the panic message reach the log.
            std::thread::sleep(Duration::from_millis(500));
            return Ended::Panic;
        }
        let qemu_log = std::fs::read_to_string(stderr_path).unwrap_or_default();
        if let Some(why) = kvm_failure(b.accel, &qemu_log) {
            return Ended::KvmBroken(why);
        }
        if let Some(line) = nothing_to_boot(firmware_log) {
            return Ended::NothingToBoot(line);
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            // The last reports may still be in the pipe.
            let waited = Instant::now();
            while !finished().2 && waited.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if finished().0 {
                return Ended::Done;
            }
            let qemu_log = std::fs::read_to_string(stderr_path).unwrap_or_default();
            if let Some(why) = kvm_failure(b.accel, &qemu_log) {
                return Ended::KvmBroken(why);
            }
            if let Some(line) = nothing_to_boot(firmware_log) {
                return Ended::NothingToBoot(line);
            }
            return Ended::Exited(format!("{status}; {}", qemu_log.trim()));
        }
        if crate::interrupt::stopping() {
            return Ended::Interrupted;
        }
        if started.elapsed() >= b.timeout {
            return Ended::Timeout;
        }
    }
}

/// SeaBIOS's boot failures, when it found nothing to boot.
fn nothing_to_boot(firmware_log: &Path) -> Option<String> {
    let mut text = Vec::new();
    std::fs::File::open(firmware_log)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut text))
        .ok()?;
    let text = String::from_utf8_lossy(&text);
    text.contains(NOTHING_TO_BOOT).then(|| {
        text.lines()
            .filter(|l| l.starts_with("Boot failed") || l.starts_with(NOTHING_TO_BOOT))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 16 bytes the guest reads from `blockdev`, as real QEMU
    /// (no machine, its monitor's `qemu-io`) opens it.
    fn guest_reads(blockdev: &str) -> String {
        use std::io::Write;
        let mut qemu = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .args(["-blockdev", blockdev, "-monitor", "stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-x86_64 (scripts/test.sh installs it)");
        qemu.stdin
            .take()
            .unwrap()
            .write_all(b"qemu-io root \"read -v 0 16\"\nquit\n")
            .unwrap();
        let out = qemu.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .find(|l| l.starts_with("00000000:"))
            .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)))
            .to_owned()
    }

    #[test]
    fn qemu_cannot_follow_a_backing_file_inside_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host.raw");
        let mut secret = b"HOST-SECRET-DATA".to_vec();
        secret.resize(65_536, 0);
        std::fs::write(&host, &secret).unwrap();
        let disk = dir.path().join("disk.qcow2");
        let overlay = dir.path().join("overlay.qcow2");
        let qemu_img = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("qemu-img").args(args).output().unwrap();
            assert!(out.status.success(), "{out:?}");
        };
        qemu_img(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "raw".as_ref(),
            "-b".as_ref(),
            host.as_os_str(),
            disk.as_os_str(),
            "64K".as_ref(),
        ]);
        qemu_img(&[
            "create".as_ref(),
            "-q".as_ref(),
            "-u".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "qcow2".as_ref(),
            "-b".as_ref(),
            disk.as_os_str(),
            overlay.as_os_str(),
            "65536".as_ref(),
        ]);
        let ours = blockdev(&overlay, &disk, "qcow2").unwrap();
        assert!(
            guest_reads(&ours).contains("00 00 00 00 00 00 00 00"),
            "{ours}"
        );
        // Without `"backing": null` QEMU follows the disk's own reference:
        // what the test would see if imagepipe did not stop it.
        let followed = serde_json::json!({
            "driver": "qcow2",
            "node-name": "root",
            "file": { "driver": "file", "filename": overlay },
        })
        .to_string();
        assert!(
            guest_reads(&followed).contains("48 4f 53 54"),
            "the control did not read the host file"
        );
    }
}

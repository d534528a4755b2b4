//! Checking that a file is a disk image before packaging it.

use std::path::Path;
use std::process::Command;

use super::error::BuildErrorKind;

/// Disk formats KubeVirt boots from a containerDisk.
pub const SUPPORTED: &[&str] = &["qcow2", "raw"];

/// The disk's format as `qemu-img info` reads it (`qcow2` or `raw`), or why it is refused.
pub fn check(path: &Path) -> Result<String, BuildErrorKind> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "--"])
        .arg(path)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => BuildErrorKind::Unusable(
                "qemu-img is not installed: install qemu-utils (it checks disks before packaging)"
                    .to_owned(),
            ),
            _ => BuildErrorKind::io("qemu-img", e),
        })?;
    if !out.status.success() {
        return Err(BuildErrorKind::Unusable(format!(
            "{} is not a disk image: qemu-img: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| BuildErrorKind::Unusable(format!("unreadable qemu-img output: {e}")))?;
    let format = info["format"].as_str().unwrap_or("unknown").to_owned();
    let size = std::fs::metadata(path)
        .map_err(|e| BuildErrorKind::io(path, e))?
        .len();
    match format.as_str() {
        "qcow2" => Ok(format),
        // qemu-img calls anything it does not recognise raw: a raw disk is at
        // least one sector and a whole number of sectors.
        "raw" if size > 0 && size % 512 == 0 => Ok(format),
        "raw" => Err(BuildErrorKind::Unusable(format!(
            "{} is not a disk image: {size} bytes is not a whole number of 512-byte sectors (is it a text file or a truncated download?)",
            path.display()
        ))),
        other => Err(BuildErrorKind::Unusable(format!(
            "{} is a {other} disk; a containerDisk holds {}: convert it with `qemu-img convert -O qcow2`",
            path.display(),
            SUPPORTED.join(" or ")
        ))),
    }
}

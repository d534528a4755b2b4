//! Files imagepipe writes for people and other jobs to read.

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically (a temporary file beside it,
/// renamed): a reader never sees half of it. Mode 0644, like any other job
/// artifact, not a temporary file's 0600. The directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    let mut perms = tmp.as_file().metadata()?.permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file().set_permissions(perms)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

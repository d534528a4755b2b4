//! Root filesystem layers from a directory or a tarball: sorted entries,
//! one fixed mtime, numeric owners, modes kept (setuid, setgid, sticky),
//! symlinks, hard links, devices and the xattrs that matter. Absolute or `..`
//! paths and links escaping the root are refused.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::layer::LayerTar;

/// Extended attributes carried into layers.
fn xattr_matters(name: &str) -> bool {
    name == "security.capability" || name.starts_with("user.")
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A relative, normalised entry path, or an error for absolute and `..` paths.
fn clean_path(raw: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(bad(format!(
                    "rootfs entry `{}` is an absolute path",
                    raw.display()
                )));
            }
            Component::ParentDir => {
                return Err(bad(format!(
                    "rootfs entry `{}` contains `..`",
                    raw.display()
                )));
            }
        }
    }
    Ok(out)
}

/// Refuses a relative symlink target that climbs above the root from `entry`'s directory.
fn check_symlink(entry: &Path, target: &Path) -> io::Result<()> {
    if target.is_absolute() {
        return Ok(()); // resolved inside the container's root
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return Err(bad(format!(
                "symlink `{}` -> `{}` escapes the root filesystem",
                entry.display(),
                target.display()
            )));
        }
    }
    Ok(())
}

fn base_header(
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode & 0o7777);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(mtime);
    h.set_size(size);
    h
}

fn append_xattrs(tar: &mut LayerTar, xattrs: &[(String, Vec<u8>)]) -> io::Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let pax: Vec<(String, &[u8])> = xattrs
        .iter()
        .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
        .collect();
    tar.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
}

/// Appends a directory tree, walked in sorted order.
pub fn append_dir(tar: &mut LayerTar, root: &Path, mtime: u64) -> io::Result<()> {
    let mut paths = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let r = rel.join(e.file_name());
            if e.file_type()?.is_dir() {
                stack.push(r.clone());
            }
            paths.push(r);
        }
    }
    paths.sort();
    let mut inodes: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for rel in paths {
        let full = root.join(&rel);
        let meta = fs::symlink_metadata(&full)?;
        let ft = meta.file_type();
        let (uid, gid, mode) = (u64::from(meta.uid()), u64::from(meta.gid()), meta.mode());
        let xattrs: Vec<(String, Vec<u8>)> = if ft.is_symlink() {
            Vec::new()
        } else {
            let mut v: Vec<(String, Vec<u8>)> = xattr::list(&full)
                .map(|names| {
                    names
                        .filter_map(|n| n.into_string().ok())
                        .filter(|n| xattr_matters(n))
                        .filter_map(|n| xattr::get(&full, &n).ok().flatten().map(|val| (n, val)))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        };
        if ft.is_file() && meta.nlink() > 1 {
            if let Some(first) = inodes.get(&(meta.dev(), meta.ino())) {
                let mut h = base_header(tar::EntryType::Link, mode, uid, gid, mtime, 0);
                tar.append_link(&mut h, &rel, first)?;
                continue;
            }
            inodes.insert((meta.dev(), meta.ino()), rel.clone());
        }
        append_xattrs(tar, &xattrs)?;
        if ft.is_dir() {
            let mut h = base_header(tar::EntryType::Directory, mode, uid, gid, mtime, 0);
            tar.append_data(&mut h, &rel, io::empty())?;
        } else if ft.is_file() {
            let mut h = base_header(tar::EntryType::Regular, mode, uid, gid, mtime, meta.len());
            tar.append_data(&mut h, &rel, File::open(&full)?.take(meta.len()))?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full)?;
            check_symlink(&rel, &target)?;
            let mut h = base_header(tar::EntryType::Symlink, mode, uid, gid, mtime, 0);
            tar.append_link(&mut h, &rel, &target)?;
        } else if ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = base_header(kind, mode, uid, gid, mtime, 0);
            let rdev = meta.rdev();
            let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff);
            let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff);
            h.set_device_major(u32::try_from(major).unwrap_or(0))?;
            h.set_device_minor(u32::try_from(minor).unwrap_or(0))?;
            tar.append_data(&mut h, &rel, io::empty())?;
        } else if ft.is_fifo() {
            let mut h = base_header(tar::EntryType::Fifo, mode, uid, gid, mtime, 0);
            tar.append_data(&mut h, &rel, io::empty())?;
        }
        // Sockets are runtime state, not filesystem content: left out.
    }
    Ok(())
}

struct TarEntry {
    path: PathBuf,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    data_at: u64,
    link: Option<PathBuf>,
    device: (u32, u32),
    xattrs: Vec<(String, Vec<u8>)>,
}

/// Appends the entries of an uncompressed tarball, re-sorted and normalised.
pub fn append_tarball(tar: &mut LayerTar, tarball: &Path, mtime: u64) -> io::Result<()> {
    let mut archive = tar::Archive::new(File::open(tarball)?);
    let mut entries: Vec<TarEntry> = Vec::new();
    for e in archive.entries_with_seek()? {
        let mut e = e?;
        let path = clean_path(&e.path()?)?;
        if path.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let h = e.header();
        let kind = h.entry_type();
        let link = e.link_name()?.map(|l| l.into_owned());
        match (kind, &link) {
            (tar::EntryType::Symlink, Some(t)) => check_symlink(&path, t)?,
            (tar::EntryType::Link, Some(t)) => {
                let t = clean_path(t).map_err(|_| {
                    bad(format!(
                        "hard link `{}` points outside the root",
                        path.display()
                    ))
                })?;
                if !entries.iter().any(|x| x.path == t) {
                    return Err(bad(format!(
                        "hard link `{}` points at `{}`, which is not in the archive before it",
                        path.display(),
                        t.display()
                    )));
                }
            }
            _ => {}
        }
        let mut xattrs = Vec::new();
        if let Some(pax) = e.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr."))
                    && xattr_matters(name)
                {
                    xattrs.push((name.to_owned(), ext.value_bytes().to_vec()));
                }
            }
        }
        xattrs.sort();
        let h = e.header();
        let device = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            (
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            )
        } else {
            (0, 0)
        };
        let entry = TarEntry {
            kind: h.entry_type(),
            mode: h.mode()?,
            uid: h.uid()?,
            gid: h.gid()?,
            size: e.size(),
            data_at: e.raw_file_position(),
            link: link.map(|l| {
                if kind == tar::EntryType::Link {
                    clean_path(&l).unwrap_or(l)
                } else {
                    l
                }
            }),
            device,
            xattrs,
            path,
        };
        // A later entry for the same path replaces the earlier one, as tar extraction does.
        entries.retain(|x| x.path != entry.path);
        entries.push(entry);
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut file = File::open(tarball)?;
    for e in entries {
        append_xattrs(tar, &e.xattrs)?;
        let mut h = base_header(e.kind, e.mode, e.uid, e.gid, mtime, 0);
        match e.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                file.seek(SeekFrom::Start(e.data_at))?;
                tar.append_data(&mut h, &e.path, (&mut file).take(e.size))?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = e.link.unwrap_or_default();
                tar.append_link(&mut h, &e.path, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                h.set_device_major(e.device.0)?;
                h.set_device_minor(e.device.1)?;
                tar.append_data(&mut h, &e.path, io::empty())?;
            }
            tar::EntryType::Directory | tar::EntryType::Fifo => {
                tar.append_data(&mut h, &e.path, io::empty())?
            }
            _ => {} // metadata-only records (PAX, GNU long names) are folded into entries
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_links() {
        assert!(clean_path(Path::new("/etc/passwd")).is_err());
        assert!(clean_path(Path::new("a/../../b")).is_err());
        assert_eq!(
            clean_path(Path::new("./a/b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(check_symlink(Path::new("usr/lib/x"), Path::new("../../bin/sh")).is_ok());
        assert!(check_symlink(Path::new("usr/lib/x"), Path::new("../../../etc/passwd")).is_err());
        assert!(check_symlink(Path::new("x"), Path::new("/etc/passwd")).is_ok());
    }
}

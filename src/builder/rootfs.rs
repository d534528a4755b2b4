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
///
/// What any valid tarball becomes is a layer every unpacker accepts: a hard
/// link always follows the file it links to (the first path of a linked
/// group in sorted order carries the data, the others link to it); a path
/// through a symlink of the archive, a member cut short by a truncated file,
/// and sparse members are refused with an error naming the member. Linear
/// in the number of entries, but for the sort.
pub fn append_tarball(tar: &mut LayerTar, tarball: &Path, mtime: u64) -> io::Result<()> {
    let file_len = fs::metadata(tarball)?.len();
    let mut archive = tar::Archive::new(File::open(tarball)?);
    // Entries by path; a later entry for a path replaces the earlier one, as
    // extraction does (the slot of the earlier one is emptied).
    let mut entries: Vec<Option<TarEntry>> = Vec::new();
    let mut by_path: HashMap<PathBuf, usize> = HashMap::new();
    for e in archive.entries_with_seek()? {
        let mut e = e?;
        let path = clean_path(&e.path()?)?;
        if path.as_os_str().is_empty() {
            continue; // "./" itself
        }
        let h = e.header();
        let kind = h.entry_type();
        if kind == tar::EntryType::GNUSparse {
            return Err(bad(format!(
                "rootfs entry `{}` is a GNU sparse member: repack the tarball without `--sparse` (sparse members are not carried into layers)",
                path.display()
            )));
        }
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
                if !by_path.contains_key(&t) {
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
                let key = ext.key().unwrap_or_default();
                if key.starts_with("GNU.sparse.") {
                    return Err(bad(format!(
                        "rootfs entry `{}` is a PAX sparse member: repack the tarball without `--sparse` (sparse members are not carried into layers)",
                        path.display()
                    )));
                }
                if let Some(name) = key.strip_prefix("SCHILY.xattr.")
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
        let size = e.size();
        let data_at = e.raw_file_position();
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            && data_at.saturating_add(size) > file_len
        {
            return Err(bad(format!(
                "rootfs entry `{}` claims {size} bytes but the tarball ends before them: it is truncated",
                path.display()
            )));
        }
        let entry = TarEntry {
            kind: h.entry_type(),
            mode: h.mode()?,
            uid: h.uid()?,
            gid: h.gid()?,
            size,
            data_at,
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
        if let Some(old) = by_path.insert(entry.path.clone(), entries.len()) {
            entries[old] = None;
        }
        entries.push(Some(entry));
    }
    let mut entries: Vec<TarEntry> = entries.into_iter().flatten().collect();
    // A path through a symlink of the archive would be written outside the
    // root by whoever unpacks the layer.
    let symlinks: std::collections::HashSet<&Path> = entries
        .iter()
        .filter(|e| e.kind == tar::EntryType::Symlink)
        .map(|e| e.path.as_path())
        .collect();
    for e in &entries {
        if let Some(s) = e.path.ancestors().skip(1).find(|a| symlinks.contains(a)) {
            return Err(bad(format!(
                "rootfs entry `{}` lies under `{}`, a symlink: unpacking it would write through the link",
                e.path.display(),
                s.display()
            )));
        }
    }
    // Hard-linked groups: the first path in sorted order carries the data.
    let root_of = |p: &PathBuf, entries: &HashMap<PathBuf, (tar::EntryType, Option<PathBuf>)>| {
        let mut cur = p.clone();
        for _ in 0..64 {
            match entries.get(&cur) {
                Some((tar::EntryType::Link, Some(t))) => cur = t.clone(),
                _ => break,
            }
        }
        cur
    };
    let kinds: HashMap<PathBuf, (tar::EntryType, Option<PathBuf>)> = entries
        .iter()
        .map(|e| (e.path.clone(), (e.kind, e.link.clone())))
        .collect();
    let roots: std::collections::HashSet<PathBuf> = entries
        .iter()
        .filter(|e| e.kind == tar::EntryType::Link)
        .map(|e| root_of(&e.path, &kinds))
        .collect();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first_of_group: HashMap<PathBuf, PathBuf> = HashMap::new();
    for e in &entries {
        if e.kind == tar::EntryType::Link || roots.contains(&e.path) {
            let root = root_of(&e.path, &kinds);
            first_of_group.entry(root).or_insert_with(|| e.path.clone());
        }
    }
    let index: HashMap<PathBuf, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    let mut file = File::open(tarball)?;
    for i in 0..entries.len() {
        let e = &entries[i];
        let group_root = if e.kind == tar::EntryType::Link {
            Some(root_of(&e.path, &kinds))
        } else if roots.contains(&e.path) {
            Some(e.path.clone())
        } else {
            None
        };
        // The member carrying the data and metadata of a linked group.
        let (data, carrier) = match &group_root {
            Some(root) => {
                let first = &first_of_group[root];
                let r = &entries[index[root]];
                (r, (first != &e.path).then(|| first.clone()))
            }
            None => (e, None),
        };
        append_xattrs(tar, &data.xattrs)?;
        let mut h = base_header(data.kind, data.mode, data.uid, data.gid, mtime, 0);
        if let Some(first) = carrier {
            h.set_entry_type(tar::EntryType::Link);
            tar.append_link(&mut h, &e.path, &first)?;
            continue;
        }
        match data.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.size);
                file.seek(SeekFrom::Start(data.data_at))?;
                tar.append_data(&mut h, &e.path, (&mut file).take(data.size))?;
            }
            tar::EntryType::Symlink => {
                let target = data.link.clone().unwrap_or_default();
                tar.append_link(&mut h, &e.path, &target)?;
            }
            tar::EntryType::Link => {
                // A link to something that is not a regular file (a link
                // chain ending in a symlink or device): keep it as written.
                let target = e.link.clone().unwrap_or_default();
                tar.append_link(&mut h, &e.path, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                h.set_device_major(data.device.0)?;
                h.set_device_minor(data.device.1)?;
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

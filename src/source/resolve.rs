//! Resolving sources to the checksums a recipe is made of.

use crate::catalog::{FileDigest, HashAlgorithm};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use globset::Glob;
use sha2::{Digest as _, Sha256};

use super::error::SourceError;
use crate::oci::hash::hex;

/// A local input's identity: the sha256 of a file's bytes, or of a directory
/// tree's canonical listing (paths, types, modes, owners, contents, links).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub sha256: String,
    /// `file` or `dir`.
    pub kind: &'static str,
}

/// What recipe resolution needs from the outside world.
pub trait SourceResolver {
    /// Identity of a local file or directory.
    fn local(&self, path: &Path) -> Result<Resolved, SourceError>;
    /// The checksum an upstream SHA256SUMS file lists for `url`'s file.
    fn checksum_from_sums(&self, sums_url: &str, url: &str) -> Result<FileDigest, SourceError>;
}

/// Reads the filesystem and fetches SHA256SUMS files over HTTP(S).
#[derive(Debug, Default)]
pub struct DefaultResolver;

impl SourceResolver for DefaultResolver {
    fn local(&self, path: &Path) -> Result<Resolved, SourceError> {
        let meta = fs::metadata(path).map_err(|e| SourceError::io(path, e))?;
        if !meta.is_dir() && !meta.is_file() {
            return Err(SourceError::NotRegular {
                path: path.to_path_buf(),
            });
        }
        if meta.is_dir() {
            Ok(Resolved {
                sha256: tree_digest(path)?,
                kind: "dir",
            })
        } else {
            let file = fs::File::open(path).map_err(|e| SourceError::io(path, e))?;
            // A multi-GiB disk takes seconds: a bar says what is happening.
            let pb = crate::progress::bar(&format!("hashing {}", path.display()), meta.len());
            let sha256 = reader_digest(pb.wrap_read(file)).map_err(|e| SourceError::io(path, e))?;
            pb.finish_and_clear();
            Ok(Resolved {
                sha256,
                kind: "file",
            })
        }
    }

    fn checksum_from_sums(&self, sums_url: &str, url: &str) -> Result<FileDigest, SourceError> {
        let body = crate::http::get_text(sums_url, 4 << 20).map_err(|e| SourceError::Sums {
            url: sums_url.to_owned(),
            reason: e,
        })?;
        let name = super::url_file_name(url);
        find_in_sums(&body, name).map_err(|reason| SourceError::Sums {
            url: sums_url.to_owned(),
            reason,
        })
    }
}

/// A resolver for `--offline` without a lock: local files as the inner
/// resolver reads them, and nothing fetched — a `checksums_url` is an
/// error that says so.
pub struct Offline<'a>(pub &'a dyn SourceResolver);

impl SourceResolver for Offline<'_> {
    fn local(&self, path: &Path) -> Result<Resolved, SourceError> {
        self.0.local(path)
    }

    fn checksum_from_sums(&self, sums_url: &str, url: &str) -> Result<FileDigest, SourceError> {
        Err(SourceError::Sums {
            url: sums_url.to_owned(),
            reason: format!(
                "not fetched (--offline), so the checksum of {url}, and the recipe and tag of its image, are not known: run `imagepipe update` once online and commit the lock it writes, or plan without --offline"
            ),
        })
    }
}

pub use crate::io_reason::io_reason;

pub fn reader_digest(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Looks a file up in GNU (`<hex>  name`, `<hex> *name`) or BSD
/// (`SHA256 (name) = <hex>`, `SHA512 (name) = <hex>`) checksum listings of
/// SHA-256 or SHA-512: the algorithm is the BSD line's, else the digest's
/// length. Why it is not there, otherwise.
pub fn find_in_sums(body: &str, name: &str) -> Result<FileDigest, String> {
    let digest = |algorithm: Option<HashAlgorithm>, h: &str| {
        let h = h.trim();
        let algorithm = algorithm.or_else(|| HashAlgorithm::of_hex_len(h.len()))?;
        (h.len() == algorithm.hex_len() && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| {
            FileDigest {
                algorithm,
                hex: h.to_ascii_lowercase(),
            }
        })
    };
    let mut listed = 0usize;
    let mut unreadable = None;
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("-----") {
            continue;
        }
        let bsd = HashAlgorithm::ALL.into_iter().find_map(|a| {
            line.strip_prefix(&format!("{} (", a.name().to_ascii_uppercase()))
                .and_then(|rest| rest.split_once(") = "))
                .map(|(file, h)| (Some(a), file, h))
        });
        let (algorithm, file, h) = match bsd {
            Some(found) => found,
            None => match line.split_once(char::is_whitespace) {
                Some((h, file)) => {
                    let file = file.trim_start().trim_start_matches('*');
                    (None, file.strip_prefix("./").unwrap_or(file), h)
                }
                None => continue,
            },
        };
        listed += 1;
        if file != name {
            continue;
        }
        match digest(algorithm, h) {
            Some(d) => return Ok(d),
            None => unreadable = Some(h.trim().to_owned()),
        }
    }
    Err(match unreadable {
        Some(h) => format!(
            "lists `{name}` with `{h}`, which is neither a SHA-256 (64 hex) nor a SHA-512 (128 hex) checksum"
        ),
        None if listed == 0 => "lists no file at all (is it a checksum file? GNU `<hex>  name` or BSD `SHA256 (name) = <hex>` lines are read)".to_owned(),
        None => format!("lists no checksum for `{name}` among its {listed} entries (check the file name in the url)"),
    })
}

/// Digest of a directory tree's canonical listing: entries sorted by path,
/// each with type, mode, owner, size/content digest, link target or device.
pub fn tree_digest(root: &Path) -> Result<String, SourceError> {
    let mut h = Sha256::new();
    let mut stack = vec![PathBuf::new()];
    let mut entries = Vec::new();
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| SourceError::io(&dir, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| SourceError::io(&dir, e))?;
        names.sort();
        for name in names {
            let r = rel.join(&name);
            let meta = fs::symlink_metadata(root.join(&r)).map_err(|e| SourceError::io(&r, e))?;
            if meta.is_dir() {
                stack.push(r.clone());
            }
            entries.push((r, meta));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, meta) in entries {
        let ft = meta.file_type();
        let extra = if ft.is_file() {
            let f = fs::File::open(root.join(&rel)).map_err(|e| SourceError::io(&rel, e))?;
            reader_digest(f).map_err(|e| SourceError::io(&rel, e))?
        } else if ft.is_symlink() {
            fs::read_link(root.join(&rel))
                .map_err(|e| SourceError::io(&rel, e))?
                .to_string_lossy()
                .into_owned()
        } else if ft.is_block_device() || ft.is_char_device() {
            meta.rdev().to_string()
        } else {
            String::new()
        };
        let line = format!(
            "{:o} {} {} {} {}\0{}\n",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            rel.display(),
            extra
        );
        h.update(line.as_bytes());
    }
    Ok(hex(&h.finalize()))
}

/// Files under `base` matching `pattern` (relative, `/`-separated), sorted.
/// A pattern without glob characters must name an existing file.
pub fn expand_glob(base: &Path, pattern: &str) -> Result<Vec<PathBuf>, SourceError> {
    if !pattern.contains(['*', '?', '[', '{']) {
        let p = PathBuf::from(pattern);
        return if base.join(&p).is_file() {
            Ok(vec![p])
        } else if base.join(&p).is_dir() {
            expand_glob(base, &format!("{}/**", pattern.trim_end_matches('/')))
        } else {
            Err(SourceError::Input {
                pattern: pattern.to_owned(),
                reason: format!("no such file under {}", base.display()),
            })
        };
    }
    let matcher = Glob::new(pattern)
        .map_err(|e| SourceError::Input {
            pattern: pattern.to_owned(),
            reason: e.to_string(),
        })?
        .compile_matcher();
    // Walk only from the literal prefix of the pattern.
    let prefix: PathBuf = pattern
        .split('/')
        .take_while(|c| !c.contains(['*', '?', '[', '{']))
        .collect();
    let mut out = Vec::new();
    let mut stack = vec![prefix];
    while let Some(rel) = stack.pop() {
        let Ok(read) = fs::read_dir(base.join(&rel)) else {
            continue;
        };
        for entry in read.flatten() {
            let r = rel.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(r),
                Ok(t) if t.is_file() && matcher.is_match(&r) => out.push(r),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_gnu_and_bsd_formats_of_sha256_and_sha512() {
        let h = "a".repeat(64);
        let sha256 = |hex: &str| {
            Ok(FileDigest {
                algorithm: HashAlgorithm::Sha256,
                hex: hex.to_owned(),
            })
        };
        let gnu = format!("{h} *disk.img\n{} other.img\n", "b".repeat(64));
        assert_eq!(find_in_sums(&gnu, "disk.img"), sha256(&h));
        let bsd = format!("SHA256 (disk.img) = {h}\n");
        assert_eq!(find_in_sums(&bsd, "disk.img"), sha256(&h));
        assert!(
            find_in_sums(&bsd, "nope.img")
                .unwrap_err()
                .contains("no checksum for `nope.img` among its 1 entries")
        );
        // Debian's SHA512SUMS and Flatcar's BSD-style lines.
        let long = "C".repeat(128);
        let sha512 = Ok(FileDigest {
            algorithm: HashAlgorithm::Sha512,
            hex: long.to_ascii_lowercase(),
        });
        let debian = format!("{long}  debian-12-generic-amd64.qcow2\n");
        assert_eq!(
            find_in_sums(&debian, "debian-12-generic-amd64.qcow2"),
            sha512
        );
        let flatcar = format!("SHA512 (flatcar.img) = {long}\n");
        assert_eq!(find_in_sums(&flatcar, "flatcar.img"), sha512);
        // A BSD SHA512 line holding a 64-hex value is not read as SHA-256.
        let wrong = format!("SHA512 (x.img) = {h}\n");
        assert!(
            find_in_sums(&wrong, "x.img")
                .unwrap_err()
                .contains("neither")
        );
        assert!(
            find_in_sums("<html>", "x.img")
                .unwrap_err()
                .contains("no file at all")
        );
        assert!(
            find_in_sums("", "x.img")
                .unwrap_err()
                .contains("no file at all")
        );
    }
}

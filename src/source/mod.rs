//! Where disks and root filesystems come from.

pub mod error;
pub mod fetch;
pub mod resolve;

/// The most a `url` source without a declared `size` may download.
pub const MAX_DOWNLOAD: u64 = 64 << 30;
/// The most a compressed source may expand to.
pub const MAX_DECOMPRESSED: u64 = 64 << 30;

/// The file name a download is stored under and the decompression it needs:
/// `.../disk.img.xz` → (`disk.img`, Some("xz")).
pub fn download_name(url: &str) -> (String, Option<&'static str>) {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = if base.is_empty() { "download" } else { base };
    for (ext, algo) in [(".xz", "xz"), (".gz", "gz")] {
        if let Some(stem) = base.strip_suffix(ext)
            && !stem.is_empty()
        {
            return (stem.to_owned(), Some(algo));
        }
    }
    (base.to_owned(), None)
}

/// The name under which a URL's file appears in an upstream SHA256SUMS file.
pub fn url_file_name(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_downloads() {
        assert_eq!(
            download_name("https://x/a/disk.qcow2"),
            ("disk.qcow2".into(), None)
        );
        assert_eq!(
            download_name("https://x/a/disk.raw.xz?x=1"),
            ("disk.raw".into(), Some("xz"))
        );
        assert_eq!(
            download_name("https://x/a/disk.img.gz"),
            ("disk.img".into(), Some("gz"))
        );
    }
}

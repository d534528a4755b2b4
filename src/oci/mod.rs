//! OCI values: digests, descriptors, media types, canonical JSON.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod hash;

pub mod media {
    pub const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";
    pub const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// `artifactType` of disks published as OCI artifacts.
    pub const DISK_ARTIFACT: &str = "application/vnd.imagepipe.disk.v1";
}

pub mod annotation {
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
    /// On an untagged `index.json` entry of a layout: the image it refers to.
    pub const SUBJECT: &str = "io.imagepipe.subject";
    /// The name `ctr images import` gives an image of an OCI layout.
    pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
    pub const CREATED: &str = "org.opencontainers.image.created";
    pub const TITLE: &str = "org.opencontainers.image.title";
    pub const VERSION: &str = "org.opencontainers.image.version";
    pub const IMAGE: &str = "io.imagepipe.image";
    pub const RECIPE: &str = "io.imagepipe.recipe";
    pub const KUBERNETES: &str = "io.imagepipe.kubernetes";
    pub const RUNC: &str = "io.imagepipe.runc";
    pub const CONTAINERD: &str = "io.imagepipe.containerd";
    pub const SOURCE_SHA256: &str = "io.imagepipe.source.sha256";
}

/// A sha256 content digest, `sha256:<64 lowercase hex>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a sha256 digest")]
pub struct BadDigest(String);

impl Digest {
    pub fn from_hex(hex: &str) -> Result<Self, BadDigest> {
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self {
                hex: hex.to_owned(),
            })
        } else {
            Err(BadDigest(hex.to_owned()))
        }
    }

    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hex: hash::sha256_hex(bytes),
        }
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        s.strip_prefix("sha256:")
            .ok_or_else(|| BadDigest(s.to_owned()))
            .and_then(Self::from_hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl schemars::JsonSchema for Digest {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Digest".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^sha256:[0-9a-f]{64}$",
            "description": "A sha256 content digest."
        })
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What names a manifest in a repository: a tag, or a digest. Made once,
/// where a name comes in (a rendered tag, a digest read from a manifest),
/// and passed typed to every store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl Reference {
    /// A tag (a digest-shaped string cannot be one: tags have no `:`).
    pub fn tag(tag: &str) -> Self {
        Self::Tag(tag.to_owned())
    }

    /// A tag or a digest, as written.
    pub fn parse(s: &str) -> Self {
        s.parse().map_or_else(|_| Self::tag(s), Self::Digest)
    }

    pub fn as_tag(&self) -> Option<&str> {
        match self {
            Self::Tag(t) => Some(t),
            Self::Digest(_) => None,
        }
    }
}

impl From<&Digest> for Reference {
    fn from(d: &Digest) -> Self {
        Self::Digest(d.clone())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tag(t) => f.write_str(t),
            Self::Digest(d) => fmt::Display::fmt(d, f),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Self {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image manifest or an index, as read: the one typed view of manifest
/// bytes that copying, state, cleanup, publishing and verification share.
/// Only read, never written back (the bytes are what is stored and hashed;
/// fields this type does not know are kept by keeping the bytes).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    /// An index's entries.
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
    #[serde(default)]
    pub subject: Option<Descriptor>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// An index (by its media type, or by its entries when it names none).
    pub fn is_index(&self) -> bool {
        self.media_type.as_deref() == Some(media::INDEX)
            || (self.media_type.is_none() && !self.manifests.is_empty())
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// Everything it names: an index's entries, or a manifest's config and layers.
    pub fn references(&self) -> impl Iterator<Item = &Digest> {
        self.manifests
            .iter()
            .chain(&self.config)
            .chain(&self.layers)
            .map(|d| &d.digest)
    }

    /// Bytes of a manifest's config and layers (`None` for an index).
    pub fn content_size(&self) -> Option<u64> {
        (!self.is_index()).then(|| {
            self.config.as_ref().map_or(0, |c| c.size)
                + self.layers.iter().map(|l| l.size).sum::<u64>()
        })
    }
}

/// Canonical JSON: object keys sorted at every level, no whitespace. The
/// bytes of manifests, configs and indexes, so their digests are reproducible.
pub fn canonical_json(value: &impl Serialize) -> Vec<u8> {
    // serde_json's Value map is a BTreeMap (sorted keys) in this build.
    let v = serde_json::to_value(value).expect("serialisable");
    serde_json::to_vec(&v).expect("serialisable")
}

/// A Unix time as a timestamp, clamped to the years 9999 BC–9999 AD
/// (`SOURCE_DATE_EPOCH` values beyond are not dates anyone means).
pub fn timestamp(epoch: i64) -> jiff::Timestamp {
    let clamped = epoch.clamp(
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    jiff::Timestamp::from_second(clamped).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// RFC 3339 UTC timestamp of a Unix time, e.g. `2026-01-02T03:04:05Z`.
pub fn rfc3339(epoch: i64) -> String {
    timestamp(epoch).strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// An RFC 3339 timestamp (`2026-01-02T03:04:05.123Z`, or with an offset)
/// → seconds since 1970.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(jiff::Timestamp::as_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for t in [0, 1_700_000_000, 951_782_400, 1_767_323_045] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(
            parse_rfc3339("2026-01-02T03:04:05.123Z"),
            Some(1_767_323_045)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn digests_parse_strictly() {
        let d: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        assert_eq!(d.hex(), "a".repeat(64));
        assert!(
            format!("sha256:{}", "A".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
        assert!("sha512:abc".parse::<Digest>().is_err());
        assert!(
            format!("sha256:{}/../x", "a".repeat(64))
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut d = Descriptor::new(media::LAYER_GZIP, Digest::of(b""), 0);
        d.annotations.insert("z".into(), "1".into());
        d.annotations.insert("a".into(), "2".into());
        let s = String::from_utf8(canonical_json(&d)).unwrap();
        assert!(
            s.starts_with(r#"{"annotations":{"a":"2","z":"1"},"digest":"#),
            "{s}"
        );
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_323_045), "2026-01-02T03:04:05Z");
    }
}

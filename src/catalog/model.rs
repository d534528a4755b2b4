//! The typed catalog: what `images.yml` says, after decoding.

use std::path::PathBuf;

use super::diag::Span;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub const fn new(value: T, span: Span) -> Self {
        Self { value, span }
    }
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// The whole catalog.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// The catalog file; relative paths in it are resolved against its directory.
    pub path: PathBuf,
    pub version: u64,
    pub variables: Vec<Variable>,
    pub targets: Vec<Target>,
    pub defaults: Defaults,
    pub images: Vec<Image>,
    pub retention: Option<Retention>,
    pub release: ReleaseSettings,
}

/// `release:` — which CI tags name a Kubernetes release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReleaseSettings {
    /// Release tags start with this (`k8s-v1.33.6`); a CI tag without it is
    /// not a release. `None`: every CI tag that parses is one.
    pub tag_prefix: Option<String>,
}

impl Catalog {
    /// The directory that relative paths of the catalog are resolved against,
    /// as an absolute path: builders run there, and a relative program path
    /// (`./make-disk.sh`) must not depend on where imagepipe was started.
    pub fn base_dir(&self) -> PathBuf {
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        // `absolute` keeps `.` components; drop them for readable paths.
        dir.components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    }

    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| *i.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| *t.name == name)
    }

    /// The directory of the build store, resolved against the catalog.
    pub fn build_store_dir(&self) -> PathBuf {
        match &self.build_store().kind {
            TargetKind::Layout { path } => self.base_dir().join(path),
            _ => self.base_dir().join(DEFAULT_LAYOUT),
        }
    }

    /// The layout store builds go into: the layout target named `local`, else
    /// the first layout target, else the embedded default `.imagepipe/store`.
    pub fn build_store(&self) -> Target {
        let layouts = || {
            self.targets
                .iter()
                .filter(|t| matches!(t.kind, TargetKind::Layout { .. }))
        };
        layouts()
            .find(|t| *t.name == DEFAULT_TARGET)
            .or_else(|| layouts().next())
            .cloned()
            .unwrap_or_else(|| Target {
                name: Spanned::new(DEFAULT_TARGET.to_owned(), Span::default()),
                kind: TargetKind::Layout {
                    path: PathBuf::from(DEFAULT_LAYOUT),
                },
                span: Span::default(),
            })
    }
}

/// A pinned component version, overridable from the environment.
#[derive(Clone, Debug)]
pub struct Variable {
    pub name: Spanned<String>,
    pub default: String,
    /// Environment variable that overrides the default when set and non-empty.
    pub env: Option<String>,
}

/// The path of the embedded default store, relative to the catalog.
pub const DEFAULT_LAYOUT: &str = ".imagepipe/store";
/// The name of the implicit target used when a catalog declares none.
pub const DEFAULT_TARGET: &str = "local";

#[derive(Clone, Debug)]
pub struct Target {
    pub name: Spanned<String>,
    pub kind: TargetKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetKind {
    /// An OCI image layout directory (the embedded default store).
    Layout { path: PathBuf },
    /// A registry speaking the OCI Distribution API.
    Registry {
        registry: String,
        namespace: Option<String>,
        insecure: bool,
        /// Upload blobs in chunks of this many bytes (resumable); `None`: one streamed PUT.
        chunk_size: Option<u64>,
    },
    /// A cloud region receiving machine images (OMI/AMI) built there by Packer.
    Cloud {
        provider: String,
        region: String,
        /// Environment handed to Packer (and the existence check) for this region.
        env: Vec<(String, String)>,
        /// Optional command telling whether an image name exists in the region
        /// (exit 0: yes, 1: no); arguments may use `{image_name}` and `{region}`.
        exists: Option<Vec<String>>,
    },
}

impl TargetKind {
    pub fn is_cloud(&self) -> bool {
        matches!(self, Self::Cloud { .. })
    }

    /// `layout`, `registry` or `cloud`, as the catalog writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Layout { .. } => "layout",
            Self::Registry { .. } => "registry",
            Self::Cloud { .. } => "cloud",
        }
    }
}

impl Target {
    /// Where an image of this target lives, for humans: `host/ns/name` or `layout:name`.
    pub fn repository(&self, image: &str) -> String {
        match &self.kind {
            TargetKind::Cloud {
                provider, region, ..
            } => format!("{provider}:{region}"),
            TargetKind::Layout { path } => format!("oci:{}", path.join(image).display()),
            TargetKind::Registry {
                registry,
                namespace: Some(ns),
                ..
            } => format!("{registry}/{ns}/{image}"),
            TargetKind::Registry {
                registry,
                namespace: None,
                ..
            } => format!("{registry}/{image}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip { level: u32 },
    Zstd { level: i32 },
}

impl Compression {
    pub const NAMES: &'static [&'static str] = &["none", "gzip", "zstd"];
    pub const DEFAULT_GZIP_LEVEL: u32 = 3;
    pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

    /// The canonical spelling used in the recipe: `none`, `gzip:6`, `zstd:3`.
    pub fn canonical(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Gzip { level } => format!("gzip:{level}"),
            Self::Zstd { level } => format!("zstd:{level}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Defaults {
    pub tags: Vec<Spanned<String>>,
    /// Mutable tag templates that pre-releases (`v1.34.0-rc.1`) move too.
    pub prerelease_tags: Vec<Spanned<String>>,
    pub compression: Compression,
    pub verify: Option<Verify>,
}

/// The tag templates used when neither the image nor `defaults` sets any.
pub const DEFAULT_TAGS: &[&str] = &["{name}-{hash}", "latest"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    ContainerDisk,
    Rootfs,
    Artifact,
    /// A cloud machine image built by Packer in each cloud region target.
    MachineImage,
}

impl Format {
    pub const NAMES: &'static [&'static str] =
        &["containerdisk", "rootfs", "artifact", "machine-image"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContainerDisk => "containerdisk",
            Self::Rootfs => "rootfs",
            Self::Artifact => "artifact",
            Self::MachineImage => "machine-image",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Os {
    pub distro: String,
    pub version: String,
}

/// An OCI platform such as `linux/amd64` or `linux/arm64/v8`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    pub const KNOWN_ARCHES: &'static [&'static str] = &[
        "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
    ];

    pub fn amd64() -> Self {
        Self {
            os: "linux".into(),
            arch: "amd64".into(),
            variant: None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Some(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Some(Self {
                os: (*os).into(),
                arch: (*arch).into(),
                variant: Some((*v).into()),
            }),
            _ => None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub name: Spanned<String>,
    pub os: Os,
    /// One source per platform; a single entry is a plain image, several an index.
    pub platforms: Vec<PlatformSource>,
    pub format: Format,
    pub kubernetes: bool,
    /// Tag templates; the first is immutable. `None`: the catalog's defaults.
    pub tags: Option<Vec<Spanned<String>>>,
    /// Mutable tag templates pre-releases move too; `None`: the catalog's defaults.
    pub prerelease_tags: Option<Vec<Spanned<String>>>,
    pub compression: Option<Compression>,
    /// Targets this image goes to; `None`: every target.
    pub targets: Option<Vec<Spanned<String>>>,
    /// The container runtime configuration of a `rootfs` image.
    pub config: Option<RuntimeConfig>,
    /// Boot verification; `None`: the catalog's defaults.
    pub verify: Option<Verify>,
    /// Labels a user adds: OCI config labels (where the image has a config)
    /// and manifest annotations.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What is done to the disk before it is packaged (`containerdisk`,
    /// `artifact`); `None`: packaged as the source gives it.
    pub disk: Option<DiskChange>,
    pub span: Span,
}

/// `disk:` — convert and grow a disk image before packaging it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskChange {
    /// The format written; `None`: the source's own.
    pub format: Option<DiskFormat>,
    pub resize: Option<Resize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub const NAMES: &'static [&'static str] = &["qcow2", "raw"];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }
}

/// `resize:` — a new virtual size, never smaller than the source's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resize {
    /// `+8G`: this many bytes more.
    Grow(u64),
    /// `20G`: this size (at least the source's).
    To(u64),
}

impl Resize {
    /// The canonical spelling in the recipe: `+8589934592` or `21474836480`.
    pub fn canonical(self) -> String {
        match self {
            Self::Grow(n) => format!("+{n}"),
            Self::To(n) => n.to_string(),
        }
    }
}

/// `verify:` — how `imagepipe verify` boots a disk image, and whether its
/// mutable tags wait for a passed verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    /// Mutable tags move only for digests that passed `imagepipe verify`.
    pub required: bool,
    /// How long the guest may take to finish cloud-init under KVM; under
    /// TCG (no usable /dev/kvm) it is [`TCG_FACTOR`] times as long.
    pub timeout: std::time::Duration,
    pub memory_mib: u64,
    pub firmware: Firmware,
    pub checks: Vec<Check>,
}

impl Default for Verify {
    /// What `imagepipe verify` does for an image without `verify:`: boot
    /// it, no checks, not required for promotion.
    fn default() -> Self {
        Self {
            required: false,
            timeout: DEFAULT_VERIFY_TIMEOUT,
            memory_mib: DEFAULT_VERIFY_MEMORY_MIB,
            firmware: Firmware::Bios,
            checks: Vec::new(),
        }
    }
}

/// Emulation without KVM is this many times slower, at least.
pub const TCG_FACTOR: u32 = 5;
pub const DEFAULT_VERIFY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
pub const DEFAULT_VERIFY_MEMORY_MIB: u64 = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    Bios,
    Uefi,
}

/// A command run in the guest, and what its output must contain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// A shell command line (run by `/bin/sh -c`).
    pub run: String,
    /// A template (`{kubernetes}`, `{runc}`) the output must contain; `None`: exit 0 is enough.
    pub expect: Option<Spanned<String>>,
}

/// `config:` of a `rootfs` image: what a container runtime starts it with
/// (the `config` object of the OCI image configuration).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `NAME=value` pairs, in catalog order.
    pub env: Vec<(String, String)>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl RuntimeConfig {
    /// The OCI image configuration's `config` object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut c = serde_json::Map::new();
        if !self.env.is_empty() {
            let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            c.insert("Env".into(), env.into());
        }
        if let Some(e) = &self.entrypoint {
            c.insert("Entrypoint".into(), e.clone().into());
        }
        if let Some(e) = &self.cmd {
            c.insert("Cmd".into(), e.clone().into());
        }
        if let Some(w) = &self.working_dir {
            c.insert("WorkingDir".into(), w.clone().into());
        }
        if let Some(u) = &self.user {
            c.insert("User".into(), u.clone().into());
        }
        serde_json::Value::Object(c)
    }
}

impl Image {
    /// The image's verification settings, or the defaults'.
    pub fn verification<'a>(&'a self, defaults: &'a Defaults) -> Option<&'a Verify> {
        self.verify.as_ref().or(defaults.verify.as_ref())
    }

    pub fn tag_templates<'a>(&'a self, defaults: &'a Defaults) -> &'a [Spanned<String>] {
        self.tags.as_deref().unwrap_or(&defaults.tags)
    }

    /// What tag placeholders know of this image.
    pub fn facts(&self) -> crate::context::ImageFacts<'_> {
        crate::context::ImageFacts {
            name: &self.name.value,
            distro: &self.os.distro,
            version: &self.os.version,
            arches: self
                .platforms
                .iter()
                .map(|p| p.platform.arch.as_str())
                .collect(),
        }
    }

    pub fn prerelease_templates<'a>(&'a self, defaults: &'a Defaults) -> &'a [Spanned<String>] {
        self.prerelease_tags
            .as_deref()
            .unwrap_or(&defaults.prerelease_tags)
    }

    pub fn compression(&self, defaults: &Defaults) -> Compression {
        self.compression.unwrap_or(defaults.compression)
    }

    /// Whether `target` receives this image: machine images go to cloud
    /// targets, OCI images to layouts and registries; `targets:` narrows that.
    pub fn goes_to(&self, target: &Target) -> bool {
        (self.format == Format::MachineImage) == target.kind.is_cloud()
            && self
                .targets
                .as_ref()
                .is_none_or(|ts| ts.iter().any(|t| **t == *target.name))
    }
}

#[derive(Clone, Debug)]
pub struct PlatformSource {
    pub platform: Platform,
    pub source: Source,
    pub span: Span,
}

/// Where an image's disk or rootfs comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local disk image, rootfs tarball or rootfs directory.
    File { path: PathBuf },
    /// A download verified against a pinned checksum or an upstream SHA256SUMS
    /// file. `size`: its size in bytes, if declared: a longer body stops
    /// there (otherwise at [`crate::source::MAX_DOWNLOAD`]).
    Url {
        url: String,
        checksum: Checksum,
        size: Option<u64>,
    },
    /// A Debian/Ubuntu rootfs built by mmdebstrap.
    Mmdebstrap(Mmdebstrap),
    /// A Packer build whose artifact is a disk image.
    Packer(Packer),
    /// A script that writes a disk or rootfs into the directory it is given.
    Command(Command),
}

impl Source {
    pub const KINDS: &'static [&'static str] = &["file", "url", "mmdebstrap", "packer", "command"];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::File { .. } => "file",
            Self::Url { .. } => "url",
            Self::Mmdebstrap(_) => "mmdebstrap",
            Self::Packer(_) => "packer",
            Self::Command(_) => "command",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// The digest of the downloaded file.
    Pinned(FileDigest),
    /// An upstream checksum file (`SHA256SUMS`, `SHA512SUMS`, `CHECKSUM`)
    /// listing the file by name.
    SumsUrl(String),
}

/// The hash algorithms upstream images publish checksums in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

impl HashAlgorithm {
    pub const ALL: [Self; 2] = [Self::Sha256, Self::Sha512];

    /// `sha256` / `sha512`: the catalog key, the recipe field, the cache directory.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Hex characters of a digest.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }

    /// The algorithm whose digests have `n` hex characters.
    pub fn of_hex_len(n: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.hex_len() == n)
    }
}

/// A file's digest: algorithm and lowercase hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDigest {
    pub algorithm: HashAlgorithm,
    pub hex: String,
}

impl FileDigest {
    /// `algorithm:hex` when `hex` is lowercase hex of the algorithm's
    /// length (a digest read from a file a person may have edited).
    pub fn parse(algorithm: &str, hex: &str) -> Option<Self> {
        let algorithm = HashAlgorithm::ALL
            .into_iter()
            .find(|a| a.name() == algorithm)?;
        let d = Self {
            algorithm,
            hex: hex.to_owned(),
        };
        d.is_well_formed().then_some(d)
    }

    /// Lowercase hex of the algorithm's length: safe to name a file by.
    pub fn is_well_formed(&self) -> bool {
        self.hex.len() == self.algorithm.hex_len()
            && self
                .hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }
}

impl std::fmt::Display for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mmdebstrap {
    pub suite: String,
    pub variant: String,
    pub packages: Vec<String>,
    pub components: Vec<String>,
    pub mirror: Option<String>,
}

impl Mmdebstrap {
    /// A snapshot mirror (snapshot.debian.org / snapshot.ubuntu.com with a
    /// timestamp) serves the same packages forever, so the recipe pins them.
    pub fn is_pinned(&self) -> bool {
        self.mirror.as_deref().is_some_and(|m| {
            m.contains("snapshot.debian.org/archive/") || m.contains("snapshot.ubuntu.com/")
        } && m.bytes().filter(u8::is_ascii_digit).count() >= 8)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packer {
    pub template: PathBuf,
    /// Extra Packer variables (values may use `{placeholders}`).
    pub vars: Vec<(String, String)>,
    /// Files and globs whose contents are part of the recipe (scripts, Ansible roles).
    pub inputs: Vec<String>,
    /// Glob for the artifact when Packer's manifest post-processor is not used.
    pub artifact: Option<String>,
    /// Packer var files, applied in order before imagepipe's generated one
    /// (image-builder's layered kubernetes.json, cni.json, …).
    pub var_files: Vec<PathBuf>,
    /// Packer's working directory, relative to the catalog (image-builder's
    /// `images/capi`); `template`, `var_files`, `inputs` and `artifact`
    /// resolve from it. `None`: the catalog's directory.
    pub working_dir: Option<PathBuf>,
    /// The Packer variable that carries the machine-image name (`omi_name`
    /// in image-builder's Outscale template); `None`: `image_name`.
    pub name_var: Option<String>,
    /// Packer variable → environment variable: passed to Packer, not part
    /// of the recipe (`ssh_source_cidr` from the runner). They must not
    /// change what is built.
    pub runtime_vars: Vec<(String, String)>,
}

impl Packer {
    /// Where Packer runs and its paths resolve, under the catalog's `base`.
    pub fn dir(&self, base: &std::path::Path) -> PathBuf {
        match &self.working_dir {
            Some(d) => base.join(d),
            None => base.to_path_buf(),
        }
    }

    /// The variable that names the machine image.
    pub fn name_var(&self) -> &str {
        self.name_var.as_deref().unwrap_or("image_name")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The program and its arguments; the first is a path relative to the catalog or a command name.
    pub run: Vec<String>,
    pub inputs: Vec<String>,
    pub artifact: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Retention {
    pub keep_last: Option<u64>,
    pub max_age: Option<Spanned<std::time::Duration>>,
    pub protect: Vec<Spanned<String>>,
    pub max_delete: u64,
    pub git: Option<GitRetention>,
    pub span: Span,
}

pub const DEFAULT_MAX_DELETE: u64 = 50;

#[derive(Clone, Debug)]
pub struct GitRetention {
    pub repo: PathBuf,
    pub branches: Vec<Spanned<String>>,
    pub supported_releases: u64,
    pub paths: Vec<Spanned<String>>,
    /// The default branch, when the catalog names it.
    pub default_branch: Option<String>,
    /// Release branch names: `{major}`, `{minor}`, `{patch}` are numbers.
    pub release_pattern: String,
}

/// Release branches unless the catalog says otherwise.
pub const DEFAULT_RELEASE_PATTERN: &str = "release-{major}.{minor}";

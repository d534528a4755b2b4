//! Materialising a source: a local path holding the disk or root filesystem.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use crate::catalog::{Checksum, Command, FileDigest, HashAlgorithm, Mmdebstrap, Packer, Source};
use crate::source::error::SourceError;
use crate::source::resolve::{DefaultResolver, SourceResolver, expand_glob};

/// A source made local: the file or directory to package and its name.
#[derive(Debug)]
pub struct Material {
    pub path: PathBuf,
    /// The file name used inside the image (`disk/<name>` of a containerDisk).
    pub name: String,
    /// The sha256 of the source as fetched (downloads), for provenance.
    pub source_sha256: Option<String>,
    /// Scratch space the material lives in, removed when dropped.
    pub _work: Option<tempfile::TempDir>,
}

/// What builders get to know about the run.
#[derive(Clone, Debug, Default)]
pub struct BuildEnv {
    /// Environment variables for `command` and `packer` (name → value).
    pub vars: BTreeMap<String, String>,
    /// Packer variables.
    pub packer_vars: BTreeMap<String, String>,
    pub epoch: i64,
}

/// Where downloads and scratch directories live: `.imagepipe/` next to the catalog.
#[derive(Clone, Debug)]
pub struct Dirs {
    pub base: PathBuf,
    pub cache: PathBuf,
    pub work: PathBuf,
}

impl Dirs {
    pub fn new(base: &Path) -> Self {
        let state = base.join(".imagepipe");
        Self {
            base: base.to_path_buf(),
            cache: state.join("cache"),
            work: state.join("work"),
        }
    }

    /// A fresh directory under `work`, removed when dropped (and if the run is interrupted).
    pub fn scratch(&self) -> Result<tempfile::TempDir, SourceError> {
        fs::create_dir_all(&self.work).map_err(|e| SourceError::io(&self.work, e))?;
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&self.work)
            .map_err(|e| SourceError::io(&self.work, e))?;
        crate::interrupt::register_dir(dir.path());
        Ok(dir)
    }
}

/// Fetches or builds a source's material; a `url` source is checked against
/// `resolved` (the checksum its recipe was computed from) when given.
pub fn fetch(
    source: &Source,
    dirs: &Dirs,
    env: &BuildEnv,
    resolved: Option<&FileDigest>,
) -> Result<Material, SourceError> {
    match source {
        Source::File { path } => {
            let full = dirs.base.join(path);
            let meta = fs::metadata(&full).map_err(|e| SourceError::io(&full, e))?;
            if !meta.is_dir() && !meta.is_file() {
                return Err(SourceError::NotRegular { path: full });
            }
            Ok(Material {
                name: file_name(&full),
                path: full,
                source_sha256: None,
                _work: None,
            })
        }
        Source::Url {
            url,
            checksum,
            size,
        } => {
            let digest = match (resolved, checksum) {
                (Some(d), _) | (None, Checksum::Pinned(d)) => d.clone(),
                (None, Checksum::SumsUrl(s)) => DefaultResolver.checksum_from_sums(s, url)?,
            };
            download(url, &digest, *size, dirs)
        }
        Source::Command(c) => run_command(c, dirs, env),
        Source::Packer(p) => run_packer(p, dirs, env),
        Source::Mmdebstrap(m) => run_mmdebstrap(m, dirs, env),
    }
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || "disk.img".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A partial file in `dir`, named after this process, removed if the run
/// is interrupted (and by the next run if this one is killed).
fn partial(dir: &Path) -> Result<tempfile::NamedTempFile, SourceError> {
    sweep_partials(dir);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".partial-{}-", std::process::id()))
        .tempfile_in(dir)
        .map_err(|e| SourceError::io(dir, e))?;
    crate::interrupt::register_dir(tmp.path());
    Ok(tmp)
}

/// Keeps `tmp` as `dest`.
fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<(), SourceError> {
    let path = tmp.path().to_path_buf();
    tmp.persist(dest)
        .map_err(|e| SourceError::io(dest, e.error))?;
    crate::interrupt::unregister_dir(&path);
    Ok(())
}

/// Removes `.partial-<pid>-*` files of processes that no longer run.
fn sweep_partials(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(".partial-") else {
            continue;
        };
        let alive = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(crate::interrupt::running);
        // Partials without a process id are from before they had one.
        if !alive && fs::remove_file(e.path()).is_ok() {
            tracing::info!("removed {}, left by a run that is gone", e.path().display());
        }
    }
}

/// Reads through `inner`, hashing with SHA-256 (the cache's and the
/// provenance's digest) and, for a SHA-512 pin, SHA-512 too.
struct Hashing<R> {
    inner: R,
    sha256: sha2::Sha256,
    sha512: Option<sha2::Sha512>,
    len: u64,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R, pinned: HashAlgorithm) -> Self {
        use sha2::Digest as _;
        Self {
            inner,
            sha256: sha2::Sha256::new(),
            sha512: (pinned == HashAlgorithm::Sha512).then(sha2::Sha512::new),
            len: 0,
        }
    }

    /// The pinned algorithm's hex, the SHA-256 hex, and the size.
    fn finish(self) -> (String, String, u64) {
        use sha2::Digest as _;
        let sha256 = crate::oci::hash::hex(&self.sha256.finalize());
        let pinned = self
            .sha512
            .map_or_else(|| sha256.clone(), |h| crate::oci::hash::hex(&h.finalize()));
        (pinned, sha256, self.len)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        if let Some(h) = &mut self.sha512 {
            h.update(&buf[..n]);
        }
        self.len += n as u64;
        Ok(n)
    }
}

/// Reads at most `cap` bytes of `r`; one more is an error saying `what`.
fn capped<R: Read>(r: R, cap: u64) -> impl Read {
    struct Capped<R> {
        inner: io::Take<R>,
        cap: u64,
    }
    impl<R: Read> Read for Capped<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            if self.inner.limit() == 0 && n > 0 {
                return Err(io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!("more than {} bytes", self.cap),
                ));
            }
            Ok(n)
        }
    }
    Capped {
        inner: r.take(cap + 1),
        cap,
    }
}

/// Downloads into the content-addressed cache once, verifying while streaming;
/// a mismatch, a cut connection, a body longer than `size` (or
/// [`super::MAX_DOWNLOAD`]) or a signal leaves nothing in the cache.
fn download(
    url: &str,
    pinned: &FileDigest,
    declared: Option<u64>,
    dirs: &Dirs,
) -> Result<Material, SourceError> {
    // The digest names a file of the cache: never a path.
    if !pinned.is_well_formed() {
        return Err(SourceError::Download {
            url: url.to_owned(),
            reason: format!("`{pinned}` is not a checksum"),
        });
    }
    let blobs = dirs.cache.join(pinned.algorithm.name());
    fs::create_dir_all(&blobs).map_err(|e| SourceError::io(&blobs, e))?;
    let cached = blobs.join(&pinned.hex);
    // The sha256 of a file cached by another digest, kept beside it.
    let sidecar = blobs.join(format!("{}.sha256", pinned.hex));
    let mut sha256 = match pinned.algorithm {
        HashAlgorithm::Sha256 => Some(pinned.hex.clone()),
        HashAlgorithm::Sha512 => fs::read_to_string(&sidecar)
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| s.len() == 64),
    };
    if !cached.is_file() || sha256.is_none() {
        tracing::info!("downloading {url}");
        let fail = |reason: String| SourceError::Download {
            url: url.to_owned(),
            reason,
        };
        let resp = crate::http::get(url).map_err(fail)?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        let cap = declared.unwrap_or(super::MAX_DOWNLOAD);
        let bound = if declared.is_some() {
            "the `size` the catalog declares"
        } else {
            "imagepipe's cap for a download without `size` (declare `size:` for a larger file)"
        };
        let length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = length.filter(|l| *l > cap) {
            return Err(fail(format!(
                "the server announces {len} bytes, more than {cap}, {bound}; nothing was downloaded"
            )));
        }
        let mut tmp = partial(&blobs)?;
        let body = crate::http::Stalled::new(resp.into_body().into_reader());
        let mut reader = Hashing::new(capped(body, cap), pinned.algorithm);
        io::copy(&mut reader, tmp.as_file_mut()).map_err(|e| {
            if e.kind() == io::ErrorKind::FileTooLarge {
                fail(format!(
                    "the body is longer than {cap} bytes, {bound}: stopped there and discarded"
                ))
            } else {
                fail(e.to_string())
            }
        })?;
        let (digest, of_sha256, size) = reader.finish();
        if let Some(want) = declared.filter(|w| *w != size) {
            return Err(fail(format!(
                "{size} bytes arrived, the catalog declares `size` {want}; the download was discarded"
            )));
        }
        if digest != pinned.hex {
            return Err(SourceError::Checksum {
                url: url.to_owned(),
                algorithm: pinned.algorithm.name(),
                expected: pinned.hex.clone(),
                actual: digest,
                size,
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| SourceError::io(tmp.path(), e))?;
        if pinned.algorithm != HashAlgorithm::Sha256 {
            fs::write(&sidecar, &of_sha256).map_err(|e| SourceError::io(&sidecar, e))?;
        }
        persist(tmp, &cached)?;
        sha256 = Some(of_sha256);
    }
    let sha256 = sha256.unwrap_or_default();
    let (name, decompress) = super::download_name(url);
    let path = match decompress {
        None => cached,
        Some(algo) => decompressed(&cached, &sha256, &name, algo, dirs)?,
    };
    Ok(Material {
        path,
        name,
        source_sha256: Some(sha256.to_owned()),
        _work: None,
    })
}

fn decompressed(
    cached: &Path,
    sha256: &str,
    name: &str,
    algo: &str,
    dirs: &Dirs,
) -> Result<PathBuf, SourceError> {
    let dir = dirs.cache.join("decompressed").join(sha256);
    let out = dir.join(name);
    if out.is_file() {
        return Ok(out);
    }
    fs::create_dir_all(&dir).map_err(|e| SourceError::io(&dir, e))?;
    let input = File::open(cached).map_err(|e| SourceError::io(cached, e))?;
    let reader: Box<dyn Read> = match algo {
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(
            io::BufReader::new(input),
        )),
        _ => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(input))),
    };
    let mut tmp = partial(&dir)?;
    let mut reader = capped(reader, super::MAX_DECOMPRESSED);
    sparse_copy(&mut reader, tmp.as_file_mut()).map_err(|e| SourceError::Decompress {
        name: name.to_owned(),
        algo: algo.to_owned(),
        source: if e.kind() == io::ErrorKind::FileTooLarge {
            io::Error::new(
                e.kind(),
                format!(
                    "it expands to more than {} GiB, imagepipe's cap for a decompressed source: stopped there and discarded",
                    super::MAX_DECOMPRESSED >> 30
                ),
            )
        } else {
            e
        },
    })?;
    persist(tmp, &out)?;
    Ok(out)
}

/// Copies `reader` into `file`, leaving holes where whole 64 KiB blocks are
/// zeros: a decompressed raw disk takes the space of its data only.
fn sparse_copy(reader: &mut dyn Read, file: &mut File) -> io::Result<u64> {
    use io::{Seek, Write};
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|&b| b == 0) {
            file.seek(io::SeekFrom::Current(i64::try_from(n).unwrap_or(i64::MAX)))?;
        } else {
            file.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    file.set_len(total)?;
    Ok(total)
}

/// The single artifact a builder left in `dir`, or the one `glob` names.
fn pick_artifact(dir: &Path, glob: Option<&str>, what: &str) -> Result<PathBuf, SourceError> {
    let found: Vec<PathBuf> = match glob {
        Some(g) => expand_glob(dir, g)
            .unwrap_or_default()
            .into_iter()
            .map(|p| dir.join(p))
            .collect(),
        None => fs::read_dir(dir)
            .map_err(|e| SourceError::io(dir, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect(),
    };
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(SourceError::Artifact(format!(
            "{what} produced no artifact in {}{}",
            dir.display(),
            glob.map(|g| format!(" matching `{g}`")).unwrap_or_default()
        ))),
        many => Err(SourceError::Artifact(format!(
            "{what} produced {} candidate artifacts in {}; name one with `artifact:` (found: {})",
            many.len(),
            dir.display(),
            many.iter()
                .map(|p| file_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn run(cmd: Process, what: &str) -> Result<(), SourceError> {
    run_with(cmd, what, None)
}

/// Runs `cmd`, handing each line of its standard output to `line`.
fn run_reading(cmd: Process, what: &str, line: &mut dyn FnMut(&str)) -> Result<(), SourceError> {
    run_with(cmd, what, Some(line))
}

fn run_with(
    mut cmd: Process,
    what: &str,
    on_line: Option<&mut dyn FnMut(&str)>,
) -> Result<(), SourceError> {
    tracing::info!("running {what}");
    if on_line.is_some() {
        cmd.stdout(std::process::Stdio::piped());
    }
    let status = cmd
        .spawn()
        .and_then(|mut child| {
            crate::interrupt::register_child(child.id());
            if let (Some(f), Some(out)) = (on_line, child.stdout.take()) {
                for l in io::BufRead::lines(io::BufReader::new(out)).map_while(Result::ok) {
                    f(&l);
                }
            }
            let status = child.wait();
            crate::interrupt::unregister_child(child.id());
            status
        })
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SourceError::NotInstalled {
                what: what.to_owned(),
            },
            _ => SourceError::Spawn {
                what: what.to_owned(),
                source: e,
            },
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(SourceError::Failed {
            what: what.to_owned(),
            status,
        })
    }
}

fn run_command(c: &Command, dirs: &Dirs, env: &BuildEnv) -> Result<Material, SourceError> {
    let work = dirs.scratch()?;
    let out = work.path().join("out");
    fs::create_dir(&out).map_err(|e| SourceError::io(&out, e))?;
    let program = if c.run[0].contains('/') {
        dirs.base.join(&c.run[0]).display().to_string()
    } else {
        c.run[0].clone()
    };
    let mut cmd = Process::new(&program);
    cmd.args(&c.run[1..])
        .current_dir(&dirs.base)
        .envs(&env.vars)
        .env("IMAGEPIPE_OUTPUT_DIR", &out);
    // Builders' output goes to our stderr: stdout carries results only.
    cmd.stdout(std::process::Stdio::from(io::stderr().as_fd_owned()?));
    run(cmd, &format!("command `{}`", c.run.join(" ")))?;
    let path = pick_artifact(&out, c.artifact.as_deref(), "the command")?;
    Ok(Material {
        name: file_name(&path),
        path,
        source_sha256: None,
        _work: Some(work),
    })
}

/// Runs `packer build` with a generated var file (the variables a JSON template
/// declares, all of them for HCL) and `extra_env`; returns the scratch
/// directory and the `output_directory` handed to the template.
/// What a Packer build left: its scratch directory, the output directory
/// in it, and the artifact ids Packer reported (`-machine-readable`), last
/// one last.
pub struct PackerRun {
    pub work: tempfile::TempDir,
    pub out: PathBuf,
    pub artifact_ids: Vec<String>,
}

pub fn packer_build(
    p: &Packer,
    dirs: &Dirs,
    env: &BuildEnv,
    extra_env: &[(String, String)],
) -> Result<PackerRun, SourceError> {
    let dir = p.dir(&dirs.base);
    let template = dir.join(&p.template);
    let text = fs::read_to_string(&template).map_err(|e| SourceError::io(&template, e))?;
    let work = dirs.scratch()?;
    let out = work.path().join("output");
    let mut vars = env.packer_vars.clone();
    vars.insert("output_directory".into(), out.display().to_string());
    for (var, from) in &p.runtime_vars {
        let value = std::env::var(from).map_err(|_| SourceError::RuntimeVar {
            var: var.clone(),
            env: from.clone(),
        })?;
        // A runtime value never replaces what the recipe or imagepipe sets.
        if vars.insert(var.clone(), value).is_some() {
            return Err(SourceError::PackerVar {
                var: var.clone(),
                reason: "is set by imagepipe or by the recipe (`vars`, a catalog variable, the release facts); a runtime variable cannot change it".into(),
            });
        }
    }
    // Legacy JSON templates refuse variables they do not declare: pass only theirs.
    if let Ok(serde_json::Value::Object(t)) = serde_json::from_str::<serde_json::Value>(&text) {
        let declared: Vec<String> = t
            .get("variables")
            .and_then(|v| v.as_object())
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default();
        // What the catalog names explicitly must reach the template.
        let named = p
            .name_var
            .iter()
            .chain(p.runtime_vars.iter().map(|(k, _)| k));
        for var in named {
            if !declared.contains(var) {
                return Err(SourceError::PackerVar {
                    var: var.clone(),
                    reason: format!(
                        "is not declared by {} (its `variables`): the template would never see it",
                        p.template.display()
                    ),
                });
            }
        }
        vars.retain(|k, _| declared.contains(k));
    }
    let var_file = work.path().join("imagepipe.pkrvars.json");
    fs::write(
        &var_file,
        serde_json::to_vec_pretty(&vars).expect("a map of strings serialises"),
    )
    .map_err(|e| SourceError::io(&var_file, e))?;
    let mut cmd = Process::new("packer");
    cmd.args(["build", "-machine-readable"]);
    // The catalog's var files first, in order; imagepipe's own last, so its
    // release facts win.
    for f in &p.var_files {
        let full = dir.join(f);
        if !full.is_file() {
            return Err(SourceError::io(
                &full,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        cmd.arg(format!("-var-file={}", full.display()));
    }
    cmd.arg(format!("-var-file={}", var_file.display()))
        .arg(&template);
    cmd.current_dir(&dir)
        .envs(&env.vars)
        .env("PACKER_NO_COLOR", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .envs(extra_env.iter().map(|(k, v)| (k, v)));
    let mut artifact_ids = Vec::new();
    run_reading(
        cmd,
        &format!("packer build {}", p.template.display()),
        &mut |line| {
            if let Some(id) = machine_readable(line) {
                artifact_ids.push(id);
            }
        },
    )?;
    Ok(PackerRun {
        work,
        out,
        artifact_ids,
    })
}

/// A builder's message, on stderr as the builder printed it.
fn show(text: &str) {
    use io::Write;
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// One line of `packer -machine-readable` output (`time,target,type,data…`):
/// `ui` messages are shown on stderr as Packer would print them; an
/// artifact's id (`…,artifact,0,id,<id>`) is returned.
fn machine_readable(line: &str) -> Option<String> {
    let unescape = |s: &str| {
        s.replace("%!(PACKER_COMMA)", ",")
            .replace("\\n", "\n")
            .replace("\\r", "")
    };
    let fields: Vec<&str> = line.splitn(6, ',').collect();
    match fields.as_slice() {
        [_, _, "ui", _, msg @ ..] => {
            show(&unescape(&msg.join(",")));
            None
        }
        [_, _, "artifact", _, "id", id] => Some(unescape(id)),
        [_, _, _, ..] => None,
        _ => {
            show(line);
            None
        }
    }
}

fn run_packer(p: &Packer, dirs: &Dirs, env: &BuildEnv) -> Result<Material, SourceError> {
    let PackerRun { work, out, .. } = packer_build(p, dirs, env, &[])?;
    let path = match &p.artifact {
        Some(g) => pick_artifact(&p.dir(&dirs.base), Some(g), "packer")?,
        None => packer_manifest_artifact(&out).or_else(|_| pick_artifact(&out, None, "packer"))?,
    };
    Ok(Material {
        name: file_name(&path),
        path,
        source_sha256: None,
        _work: Some(work),
    })
}

/// The last build Packer's manifest post-processor recorded in
/// `<out>/packer-manifest.json`.
pub fn packer_last_build(out: &Path) -> Result<serde_json::Value, SourceError> {
    let manifest = out.join("packer-manifest.json");
    let bad = |reason: String| SourceError::PackerManifest {
        path: manifest.clone(),
        reason,
    };
    let bytes = fs::read(&manifest).map_err(|e| {
        bad(format!(
            "{} (add Packer's manifest post-processor writing there)",
            crate::io_reason::io_reason(&e)
        ))
    })?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    v["builds"]
        .as_array()
        .and_then(|b| b.last())
        .cloned()
        .ok_or_else(|| bad("lists no builds".into()))
}

/// The first file of the last build in a Packer manifest.
fn packer_manifest_artifact(out: &Path) -> Result<PathBuf, SourceError> {
    let last = packer_last_build(out)?;
    let name = last["files"][0]["name"]
        .as_str()
        .ok_or_else(|| SourceError::PackerManifest {
            path: out.join("packer-manifest.json"),
            reason: "lists no artifact files".into(),
        })?;
    let p = PathBuf::from(name);
    Ok(if p.is_absolute() { p } else { out.join(p) })
}

fn run_mmdebstrap(m: &Mmdebstrap, dirs: &Dirs, env: &BuildEnv) -> Result<Material, SourceError> {
    let work = dirs.scratch()?;
    let rootfs = work.path().join("rootfs");
    let mut cmd = Process::new("mmdebstrap");
    cmd.arg(format!("--variant={}", m.variant))
        .arg("--mode=root")
        .arg("--format=directory");
    if !m.packages.is_empty() {
        cmd.arg(format!("--include={}", m.packages.join(",")));
    }
    if !m.components.is_empty() {
        cmd.arg(format!("--components={}", m.components.join(",")));
    }
    cmd.arg(&m.suite).arg(&rootfs);
    if let Some(mirror) = &m.mirror {
        cmd.arg(mirror);
    }
    cmd.env("SOURCE_DATE_EPOCH", env.epoch.to_string());
    cmd.stdout(std::process::Stdio::from(io::stderr().as_fd_owned()?));
    run(cmd, &format!("mmdebstrap {}", m.suite))?;
    Ok(Material {
        name: "rootfs".into(),
        path: rootfs,
        source_sha256: None,
        _work: Some(work),
    })
}

trait AsFdOwned {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, SourceError>;
}

impl AsFdOwned for io::Stderr {
    fn as_fd_owned(&self) -> Result<std::os::fd::OwnedFd, SourceError> {
        use std::os::fd::AsFd;
        self.as_fd()
            .try_clone_to_owned()
            .map_err(|e| SourceError::io(Path::new("/dev/stderr"), e))
    }
}

//! The command line: parse, resolve settings, dispatch, map errors to exit codes.

mod build;
mod cleanup;
mod output;
mod plan;
mod publish;
mod release_notes;
mod update;
mod validate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::ExitStatus;
pub use crate::settings::{Common, RegistryArgs, ReleaseArgs};

#[derive(Debug, Parser)]
#[command(
    name = "imagepipe",
    version,
    about = "Build, tag, publish and garbage-collect OS images from images.yml"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log detail on stderr (-v: debug, -vv: trace); IMAGEPIPE_LOG, when set, wins.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short = 'q', long = "quiet", global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// No progress bars, even on a terminal.
    #[arg(long = "no-progress", global = true)]
    no_progress: bool,
    /// Colour in the log: `auto` (on a terminal, unless NO_COLOR is set), `always` or `never`.
    #[arg(long, value_enum, default_value_t = ColorArg::Auto, global = true, value_name = "WHEN")]
    color: ColorArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and check the catalog; exit 2 with every problem found.
    Validate(ValidateArgs),
    /// Per image × target: the immutable tag, recipe hash and action.
    Plan(PlanArgs),
    /// Build images into the local store (an OCI image layout); print `name tag digest`.
    Build(BuildArgs),
    /// Build what is missing and push to every target: immutable tags first, then mutable tags.
    Publish(PublishArgs),
    /// Markdown release notes: versions and every image reference with its digest, per target.
    ReleaseNotes(ReleaseNotesArgs),
    /// Retention plan per target and repository; deletes only with --apply.
    Cleanup(CleanupArgs),
    /// Boot each disk image under QEMU with a cloud-init seed, run its checks, record the result.
    Verify(VerifyArgs),
    /// Resolve every `url` source (its `checksums_url`, whether upstream still serves it) into the lock beside the catalog.
    Update(UpdateArgs),
    /// Write the images' immutable references into a consumer file (a YAML map CI templates read), in place.
    Pin(PinArgs),
    /// Print a JSON Schema: of the catalog (default), or of a command's `--format json` output.
    Schema {
        /// Which: the catalog, or the output of plan, publish, cleanup, verify or release-notes (`error`: what a failed command prints).
        #[arg(long, value_name = "WHAT", default_value = "catalog", value_parser = ["catalog", "plan", "publish", "cleanup", "verify", "release-notes", "error"])]
        output: String,
    },
    /// Print a shell completion script (`imagepipe completions bash > /etc/bash_completion.d/imagepipe`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or with --dir write one page per command (imagepipe.1, imagepipe-publish.1, …).
    Man {
        /// Directory to write every page into (must exist).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Change nothing; exit 1 when upstream moved (a checksum changed, a file is gone, the lock lacks a source).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// The consumer file: a YAML map `image: reference`, updated in place (other lines are kept).
    pub file: PathBuf,
    /// Also pin the digest (`…:tag@sha256:…`), read from the target.
    #[arg(long)]
    pub digest: bool,
    /// Output format of what was pinned.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format: a table, JSON, or CI fan-out.
    #[arg(long, value_enum, default_value_t = PlanFormat::Table)]
    pub format: PlanFormat,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Do not query registry targets (their state is reported as unknown).
    #[arg(long)]
    pub offline: bool,
    /// A selected target whose state cannot be read is a warning, not a failure (exit 0).
    #[arg(long)]
    pub allow_unknown: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub common: Common,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Rebuild even if the store has the immutable tag, and overwrite it.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Replace immutable tags that hold other bytes (never done otherwise).
    #[arg(long)]
    pub force: bool,
    /// Only move mutable tags, once every selected target holds the immutable tag (the fan-out's last job).
    #[arg(long, conflicts_with = "immutable_only")]
    pub tags_only: bool,
    /// Push immutable tags only and leave mutable tags to a later `publish --tags-only` (the fan-out's per-target jobs, so that every target's `latest` moves together).
    #[arg(long)]
    pub immutable_only: bool,
    /// Print the plan that would be executed, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: a selected target whose state cannot be read is a warning, not a failure.
    #[arg(long, requires = "dry_run")]
    pub allow_unknown: bool,
    /// Machine images: cloud regions built at once.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub jobs: usize,
    /// Also write every reference and digest, as `--format json` prints them, to FILE.
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReleaseNotesArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// `table` prints Markdown; `json` the same facts as data.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Also read the machine images that `publish --metadata-file` recorded in FILE (repeatable: one per region job of a fan-out).
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_files: Vec<std::path::PathBuf>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Delete what the plan says (otherwise a dry run that prints the same plan).
    #[arg(long)]
    pub apply: bool,
    /// Raise the catalog's `max_delete` for this run.
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub release: ReleaseArgs,
    /// Verify the images a target holds (a staging registry) instead of the local store; the result is recorded there.
    #[arg(long, value_name = "TARGET")]
    pub from: Option<String>,
    /// Images booted at once (each takes 2 vCPUs and its `memory`).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// KVM, TCG (emulation, slower: timeouts x5), or auto (KVM when it works).
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// `plan`'s formats: the two every command has, and CI fan-out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Table,
    Json,
    /// A JSON object usable as a GitHub Actions `strategy.matrix`.
    GithubMatrix,
    /// A GitLab child-pipeline YAML with one job per item.
    Gitlab,
}

impl From<Format> for PlanFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Table => Self::Table,
            Format::Json => Self::Json,
        }
    }
}

/// Runs the command line and returns the process exit code.
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitStatus::Invalid
            } else {
                ExitStatus::Success
            }
            .into();
        }
    };
    let env = crate::env::Environment::from_process();
    let color = match cli.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        // https://no-color.org: set and not empty.
        ColorArg::Auto => {
            env.get(crate::env::NO_COLOR).is_none_or(str::is_empty)
                && std::io::IsTerminal::is_terminal(&std::io::stderr())
        }
    };
    init_logging(
        match (cli.quiet, cli.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            // imagepipe's own detail; the libraries' stays at info.
            (false, 1) => "info,imagepipe=debug",
            (false, _) => "info,imagepipe=trace",
        },
        color,
    );
    // -q is for logs that are read later: no bars either.
    if cli.no_progress || cli.quiet {
        crate::progress::disable();
    }
    crate::interrupt::install();
    let json = wants_json(&cli.command);
    let result = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Plan(args) => plan::run(&args, &env),
        Command::Build(args) => build::run(&args, &env),
        Command::Publish(args) => publish::run(&args, &env),
        Command::ReleaseNotes(args) => release_notes::run(&args, &env),
        Command::Cleanup(args) => cleanup::run(&args, &env),
        Command::Verify(args) => verify::run(&args, &env),
        Command::Update(args) => update::run(&args, &env),
        Command::Pin(args) => update::pin(&args, &env),
        Command::Schema { output: what } => match crate::report::schema(&what) {
            Some(schema) => output::json(&schema),
            None => output::json(&crate::catalog::schema::schema()),
        },
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "imagepipe",
                &mut script,
            );
            output::text(&String::from_utf8_lossy(&script));
            Ok(ExitStatus::Success)
        }
        Command::Man { dir } => man(dir.as_deref()),
    };
    crate::interrupt::wait_if_stopping();
    match result {
        // A result that could not be written is a failed run.
        Ok(_) if output::write_failed() => ExitStatus::Failed.into(),
        Ok(status) => status.into(),
        Err(e) => {
            output::error(&e);
            if json {
                output::json_error(&e);
            }
            e.exit_status().into()
        }
    }
}

/// Whether the command was asked for `--format json`: then a failure is
/// printed on stdout as an `error` object too.
fn wants_json(c: &Command) -> bool {
    let f = match c {
        Command::Validate(a) => a.format,
        Command::Build(a) => a.format,
        Command::Publish(a) => a.format,
        Command::ReleaseNotes(a) => a.format,
        Command::Cleanup(a) => a.format,
        Command::Verify(a) => a.format,
        Command::Update(a) => a.format,
        Command::Pin(a) => a.format,
        Command::Plan(a) => return a.format == PlanFormat::Json,
        Command::Schema { .. } | Command::Completions { .. } | Command::Man { .. } => {
            return false;
        }
    };
    f == Format::Json
}

/// Man pages from the same definition as `--help`, so they cannot drift.
fn man(dir: Option<&std::path::Path>) -> crate::error::Result<ExitStatus> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let written = match dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir),
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .and_then(|()| std::io::Write::write_all(&mut std::io::stdout(), &page))
                // `imagepipe man | head` is not a failure.
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::BrokenPipe => Ok(()),
                    _ => Err(e),
                })
        }
    };
    written.map_err(|e| {
        crate::error::Error::Failed(match dir {
            Some(dir) => format!("man pages into {}: {e}", dir.display()),
            None => format!("man page: {e}"),
        })
    })?;
    Ok(ExitStatus::Success)
}

fn init_logging(level: &str, color: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(crate::env::IMAGEPIPE_LOG)
        .unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Above the progress bars, never through them.
        .with_writer(|| crate::progress::LogWriter)
        .with_target(false)
        .without_time()
        .with_ansi(color)
        .try_init();
}

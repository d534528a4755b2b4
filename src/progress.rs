//! Progress bars on a terminal, stacked: a build's and each blob upload's
//! (per target), with bytes, rate and ETA. Off the terminal, or with
//! `--no-progress`, there are none: each upload logs one line instead (its
//! size and throughput).

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

static DISABLED: AtomicBool = AtomicBool::new(false);

/// `--no-progress`: no progress bars, even on a terminal.
pub fn disable() {
    DISABLED.store(true, Ordering::Relaxed);
}

fn multi() -> &'static MultiProgress {
    static M: OnceLock<MultiProgress> = OnceLock::new();
    M.get_or_init(MultiProgress::new)
}

/// Blobs smaller than this get no bar: it would flash for a moment.
const SMALLEST_BAR: u64 = 1 << 20;

/// The log's writer: each line is written while the bars are lifted, so a
/// log line lands above them and never inside one.
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A bar labelled `label` for `len` bytes (0: not known yet), hidden when
/// there is no terminal to draw it on, or the bytes are too few to watch.
/// It leaves no line behind, however it ends.
pub fn bar(label: &str, len: u64) -> ProgressBar {
    styled(
        label,
        len,
        "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
}

/// A bar for a stream of unknown length (an upload that runs alongside the
/// build): bytes and rate; the build's bar above it has the ETA.
pub fn stream_bar(label: &str) -> ProgressBar {
    styled(label, 0, "{prefix} {bytes} {bytes_per_sec}")
}

fn styled(label: &str, len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal()
        || DISABLED.load(Ordering::Relaxed)
        || (len > 0 && len < SMALLEST_BAR)
    {
        return ProgressBar::hidden();
    }
    // Made whole while hidden, then drawn only in the stack: a bar that
    // draws itself before it joins leaves that first line behind.
    let pb = ProgressBar::hidden().with_finish(indicatif::ProgressFinish::AndClear);
    pb.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    pb.set_length(len);
    multi().add(pb)
}

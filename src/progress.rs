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

/// A bar labelled `label` for `len` bytes (0: set later), hidden when
/// there is no terminal to draw it on.
pub fn bar(label: &str, len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() || DISABLED.load(Ordering::Relaxed) {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(label.to_owned());
    multi().add(pb)
}

/// A bar for a stream of unknown length (an upload that runs alongside the
/// build): bytes and rate; the build's bar above it has the ETA.
pub fn stream_bar(label: &str) -> ProgressBar {
    let pb = bar(label, 0);
    pb.set_style(
        ProgressStyle::with_template("{prefix} {bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

//! Stopping cleanly on SIGINT and SIGTERM: the builders imagepipe started
//! are stopped, its scratch directories and the store blobs it was writing
//! removed, and the run exits 130 or 143; a second signal exits at once.
//! (What a SIGKILL leaves is swept by the next run, under the store's lock.)

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

fn scratch() -> &'static Mutex<Vec<PathBuf>> {
    static S: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    S.get_or_init(Mutex::default)
}

fn children() -> &'static Mutex<Vec<u32>> {
    static C: OnceLock<Mutex<Vec<u32>>> = OnceLock::new();
    C.get_or_init(Mutex::default)
}

/// A scratch directory (or file) to remove if the run is interrupted.
pub fn register_dir(dir: &Path) {
    scratch()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(dir.to_path_buf());
}

/// A scratch path no longer to remove (it was kept, or is gone).
pub fn unregister_dir(dir: &Path) {
    scratch()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|d| d != dir);
}

/// A child process to stop if the run is interrupted.
pub fn register_child(pid: u32) {
    children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(pid);
}

pub fn unregister_child(pid: u32) {
    children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .retain(|p| *p != pid);
}

/// Whether process `pid` still runs: files named after a process that is
/// gone (killed with SIGKILL) are left-overs the next run removes.
pub fn running(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

static STOPPING: AtomicBool = AtomicBool::new(false);

/// Called before the process exits on its own: while a signal is being
/// handled, the handler (which exits 130/143) must win, not an error
/// that stopping the builders caused.
pub fn wait_if_stopping() {
    while STOPPING.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether a signal asked the run to stop (long waits check it).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

/// Installs the handlers (once, at start).
pub fn install() {
    let stopping = Arc::new(AtomicBool::new(false));
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        // The second signal, while stopping: exit at once.
        if let Err(e) =
            signal_hook::flag::register_conditional_shutdown(sig, code, stopping.clone())
        {
            tracing::warn!("signal handling unavailable: {e}");
            return;
        }
    }
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("signal handling unavailable: {e}");
            return;
        }
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            stopping.store(true, Ordering::SeqCst);
            STOPPING.store(true, Ordering::SeqCst);
            tracing::warn!("interrupted: stopping builders and removing scratch directories");
            stop();
            std::process::exit(128 + sig);
        }
    });
}

fn stop() {
    let pids = children()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for pid in pids {
        if let Some(p) = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
        }
    }
    let dirs = scratch()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for d in dirs {
        // A scratch directory, or a partial file.
        let _ = std::fs::remove_dir_all(&d).or_else(|_| std::fs::remove_file(&d));
    }
}

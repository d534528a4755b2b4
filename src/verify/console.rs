//! The guest's serial console, read as QEMU writes it (its stdout): each
//! byte once, in bounded memory. What verification needs is kept — the
//! lines carrying the boot's nonce (the reports), whether the kernel
//! panicked, the last lines — and the console is written to the kept log
//! up to [`LOG_CAP`], which then says it was cut.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// Bytes of console written to the kept log.
pub const LOG_CAP: u64 = 16 << 20;
/// Bytes of report lines kept (every check's report is at most ~6 KiB).
const REPORTS_CAP: usize = 4 << 20;
/// A line longer than this is cut (its start is what reports need).
const LINE_CAP: usize = 64 << 10;
/// Lines of the console's end kept for messages.
const TAIL_LINES: usize = 40;

/// What has been read so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Lines containing the nonce prefix.
    pub reports: String,
    pub tail: VecDeque<String>,
    pub panicked: bool,
    /// The guest wrote anything at all.
    pub any: bool,
    /// The console reached its end (QEMU closed it).
    pub ended: bool,
    /// Bytes the guest wrote.
    pub bytes: u64,
}

/// Reads `from` to its end on its own thread, into the returned state and
/// the kept log `log`.
pub fn watch(
    from: impl Read + Send + 'static,
    log: std::fs::File,
    prefix: String,
) -> Arc<Mutex<Seen>> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let _ = read(from, log, &prefix, &out);
        if let Ok(mut s) = out.lock() {
            s.ended = true;
        }
    });
    seen
}

fn read(
    mut from: impl Read,
    mut log: std::fs::File,
    prefix: &str,
    seen: &Mutex<Seen>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    let mut line: Vec<u8> = Vec::new();
    let mut logged = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if logged < LOG_CAP {
            let keep = usize::try_from(LOG_CAP - logged).map_or(n, |room| room.min(n));
            log.write_all(&chunk[..keep])?;
            logged += keep as u64;
            if logged == LOG_CAP {
                writeln!(
                    log,
                    "\n[imagepipe: the console log is cut here, at {} MiB; the guest wrote more]",
                    LOG_CAP >> 20
                )?;
            }
        }
        let mut s = seen.lock().map_err(|_| io::Error::other("console state"))?;
        s.any = true;
        s.bytes += n as u64;
        for &b in chunk {
            if b == b'\n' {
                finish_line(&mut s, &line, prefix);
                line.clear();
            } else if line.len() < LINE_CAP {
                line.push(b);
            }
        }
    }
    if !line.is_empty()
        && let Ok(mut s) = seen.lock()
    {
        finish_line(&mut s, &line, prefix);
    }
    log.flush()
}

fn finish_line(s: &mut Seen, line: &[u8], prefix: &str) {
    let text = String::from_utf8_lossy(line);
    if text.contains("Kernel panic - not syncing") {
        s.panicked = true;
    }
    if text.contains(prefix) && s.reports.len() + text.len() < REPORTS_CAP {
        s.reports.push_str(&text);
        s.reports.push('\n');
    }
    if !text.trim().is_empty() {
        if s.tail.len() == TAIL_LINES {
            s.tail.pop_front();
        }
        s.tail
            .push_back(text.chars().filter(|c| !c.is_control()).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A flooding guest: console lines well past the log's cap, then reports.
    struct Chatty {
        left: u64,
        tail: io::Cursor<Vec<u8>>,
    }

    impl Read for Chatty {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return self.tail.read(buf);
            }
            let line =
                b"[ 12.345678] a guest that writes far more than anyone reads, again and again\n";
            let n = line
                .len()
                .min(buf.len())
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            buf[..n].copy_from_slice(&line[..n]);
            self.left -= n as u64;
            Ok(n)
        }
    }

    #[test]
    fn a_flood_is_read_once_in_bounded_memory_and_the_log_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("serial.log");
        let end = b"[ 1.0] IMAGEPIPE-VERIFY:n0nce:CHECK:0:0:b2s=\nIMAGEPIPE-VERIFY:n0nce:DONE\n";
        let from = Chatty {
            left: 8 * LOG_CAP,
            tail: io::Cursor::new(end.to_vec()),
        };
        let seen = watch(
            from,
            std::fs::File::create(&log_path).unwrap(),
            "IMAGEPIPE-VERIFY:n0nce:".into(),
        );
        while !seen.lock().unwrap().ended {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let s = seen.lock().unwrap();
        assert_eq!(s.bytes, 8 * LOG_CAP + end.len() as u64);
        assert_eq!(s.reports.lines().count(), 2, "{}", s.reports);
        assert!(s.tail.len() <= TAIL_LINES);
        assert!(!s.panicked);
        let log = std::fs::metadata(&log_path).unwrap().len();
        assert!(log > LOG_CAP && log < LOG_CAP + 200, "{log}");
        let text = std::fs::read(&log_path).unwrap();
        assert!(String::from_utf8_lossy(&text[text.len() - 120..]).contains("cut here"));
    }
}

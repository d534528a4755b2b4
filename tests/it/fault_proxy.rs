//! A fault-injecting HTTP proxy in front of a real registry, for the faults a
//! registry will not produce on demand: 5xx bursts, 429 with Retry-After,
//! connections reset in the middle of an upload. One request per connection
//! (`Connection: close` is forced) so every request can be judged.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do with requests matching `method` and containing `path`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer with this status (and `Retry-After`, if given) `times` times.
    Status {
        method: &'static str,
        path: &'static str,
        status: u16,
        retry_after: Option<u32>,
        times: usize,
    },
    /// Let `skip` matching requests through, then forward but cut the
    /// connection after `bytes` body bytes (0: before anything reaches the
    /// registry), `times` times.
    ResetAfter {
        method: &'static str,
        path: &'static str,
        skip: usize,
        bytes: usize,
        times: usize,
    },
}

pub struct FaultProxy {
    pub addr: String,
    pub requests: Arc<AtomicUsize>,
    pub injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, faults: Vec<Fault>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Mutex::new(faults));
        let (requests, injected, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (r, i, s, up) = (
            requests.clone(),
            injected.clone(),
            stop.clone(),
            upstream.to_owned(),
        );
        let handle = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (f, r, i, up) = (faults.clone(), r.clone(), i.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &f, &r, &i);
                });
            }
        });
        Self {
            addr,
            requests,
            injected,
            stop,
            handle: Some(handle),
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    faults: &Mutex<Vec<Fault>>,
    requests: &AtomicUsize,
    injected: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" {
            break;
        }
        if !line.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&line);
        }
    }
    requests.fetch_add(1, Ordering::SeqCst);
    let first = head.lines().next().unwrap_or_default().to_owned();
    let (method, path) = {
        let mut p = first.split_whitespace();
        (
            p.next().unwrap_or_default().to_owned(),
            p.next().unwrap_or_default().to_owned(),
        )
    };
    let mut reset_after = None;
    {
        let mut fs = faults.lock().unwrap();
        for f in fs.iter_mut() {
            match f {
                Fault::Status {
                    method: m,
                    path: p,
                    status,
                    retry_after,
                    times,
                } if *times > 0 && *m == method && path.contains(*p) => {
                    *times -= 1;
                    injected.fetch_add(1, Ordering::SeqCst);
                    let ra = retry_after
                        .map(|s| format!("Retry-After: {s}\r\n"))
                        .unwrap_or_default();
                    let mut c = client;
                    c.write_all(format!("HTTP/1.1 {status} Injected\r\n{ra}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
                    return c.shutdown(Shutdown::Both);
                }
                Fault::ResetAfter {
                    method: m,
                    path: p,
                    skip,
                    ..
                } if *skip > 0 && *m == method && path.contains(*p) => {
                    *skip -= 1;
                    break;
                }
                Fault::ResetAfter {
                    method: m,
                    path: p,
                    bytes,
                    times,
                    ..
                } if *times > 0 && *m == method && path.contains(*p) => {
                    *times -= 1;
                    injected.fetch_add(1, Ordering::SeqCst);
                    reset_after = Some(*bytes);
                    break;
                }
                _ => {}
            }
        }
    }
    if reset_after == Some(0) {
        return client.shutdown(Shutdown::Both);
    }
    if reset_after == Some(0) {
        return client.shutdown(Shutdown::Both);
    }
    let mut up = TcpStream::connect(upstream)?;
    up.write_all(head.as_bytes())?;
    up.write_all(b"Connection: close\r\n\r\n")?;
    let content_length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    // Request body: forward (or cut it short).
    let mut left = content_length;
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while left > 0 {
        let chunk = left.min(buf.len());
        let n = reader.read(&mut buf[..chunk])?;
        if n == 0 {
            break;
        }
        up.write_all(&buf[..n])?;
        left -= n;
        sent += n;
        if reset_after.is_some_and(|limit| sent >= limit) {
            let _ = up.shutdown(Shutdown::Both);
            return client.shutdown(Shutdown::Both);
        }
    }
    // Response: relay until the registry closes.
    let mut c = client;
    std::io::copy(&mut up, &mut c)?;
    c.shutdown(Shutdown::Both)
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

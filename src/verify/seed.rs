//! The cloud-init NoCloud seed: `user-data` that runs the catalog's checks
//! once cloud-init reaches its final stage and reports each on the serial
//! console, `meta-data`, and the ISO 9660 volume labelled `cidata` that
//! carries them.

use std::path::Path;
use std::process::Command;

use base64::Engine;

/// Output kept per check; more is cut (the serial console is slow under TCG).
pub const MAX_OUTPUT: usize = 4096;

/// The line prefix of every report; `nonce` makes it unique per boot, so
/// console noise (or an old log) can never pass for a result.
pub fn prefix(nonce: &str) -> String {
    format!("IMAGEPIPE-VERIFY:{nonce}:")
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The script the guest runs: each check through `/bin/sh -c`, its exit
/// code and output (base64, one line) written to the serial console, then
/// the final marker.
pub fn script(nonce: &str, checks: &[String]) -> String {
    let p = prefix(nonce);
    let mut s = String::from("#!/bin/sh\n# Written by imagepipe verify.\nout=/dev/ttyS0\n");
    for (i, run) in checks.iter().enumerate() {
        s.push_str(&format!(
            "o=$(sh -c \"$(echo {cmd} | base64 -d)\" 2>&1 </dev/null); e=$?\n\
             printf '%sCHECK:{i}:%s:%s\\n' '{p}' \"$e\" \"$(printf '%s' \"$o\" | head -c {MAX_OUTPUT} | base64 | tr -d '\\n')\" >>$out\n",
            cmd = b64(run),
        ));
    }
    s.push_str(&format!("printf '%sDONE\\n' '{p}' >>$out\n"));
    s
}

pub fn user_data(nonce: &str, checks: &[String]) -> String {
    format!(
        "#cloud-config\n# Written by imagepipe verify.\nwrite_files:\n  - path: /run/imagepipe-verify.sh\n    permissions: '0755'\n    encoding: b64\n    content: {}\nruncmd:\n  - [/bin/sh, /run/imagepipe-verify.sh]\n",
        b64(&script(nonce, checks))
    )
}

pub fn meta_data(nonce: &str) -> String {
    format!("instance-id: imagepipe-verify-{nonce}\nlocal-hostname: imagepipe-verify\n")
}

/// The ISO writers tried, in order: the same command line for all of them.
const ISO_TOOLS: &[&str] = &["genisoimage", "mkisofs", "xorrisofs"];

/// Writes `iso` holding `user-data` and `meta-data` from `dir`.
pub fn write_iso(dir: &Path, iso: &Path) -> Result<(), String> {
    for tool in ISO_TOOLS {
        let out = Command::new(tool)
            .args(["-quiet", "-output"])
            .arg(iso)
            .args(["-volid", "cidata", "-joliet", "-rock"])
            .arg(dir.join("user-data"))
            .arg(dir.join("meta-data"))
            .output();
        match out {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                return Err(format!(
                    "{tool} could not write the cloud-init seed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{tool}: {e}")),
        }
    }
    Err("no ISO 9660 writer for the cloud-init seed: install genisoimage (Debian/Ubuntu: `apt-get install genisoimage`), or mkisofs / xorriso".into())
}

/// One check's report, parsed from the serial console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub exit: i32,
    pub output: String,
}

/// What the console says so far: the reports by check index, and whether
/// the final marker arrived.
pub fn parse(console: &str, nonce: &str) -> (Vec<Option<Report>>, bool) {
    let p = prefix(nonce);
    let mut reports: Vec<Option<Report>> = Vec::new();
    let mut done = false;
    for line in console.lines() {
        // Kernel messages may share the line: the report starts at the prefix.
        let Some(at) = line.find(&p) else { continue };
        let rest = line[at + p.len()..].trim_end();
        if rest == "DONE" {
            done = true;
        } else if let Some(r) = rest.strip_prefix("CHECK:") {
            let mut f = r.splitn(3, ':');
            let (Some(i), Some(e), o) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            let (Ok(i), Ok(exit)) = (i.parse::<usize>(), e.parse::<i32>()) else {
                continue;
            };
            let output = base64::engine::general_purpose::STANDARD
                .decode(o.unwrap_or_default())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            if reports.len() <= i {
                reports.resize(i + 1, None);
            }
            reports[i] = Some(Report { exit, output });
        }
    }
    (reports, done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_reports_every_check_and_the_end_through_sh() {
        let checks = vec!["echo \"it's\" 'v1.33.6'".to_owned(), "exit 3".to_owned()];
        let script = script("n1", &checks);
        // Run it here, with the console redirected to a file.
        let dir = tempfile::tempdir().unwrap();
        let console = dir.path().join("console");
        let local = script.replace("out=/dev/ttyS0", &format!("out={}", console.display()));
        let status = Command::new("sh").arg("-c").arg(&local).status().unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&console).unwrap();
        // Console noise and reports of another boot are ignored.
        let noisy = format!("[ 1.0] noise\nIMAGEPIPE-VERIFY:old:DONE\n[ 2.0] x {text}");
        let (reports, done) = parse(&noisy, "n1");
        assert!(done);
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0],
            Some(Report {
                exit: 0,
                output: "it's v1.33.6".into()
            })
        );
        assert_eq!(reports[1].as_ref().unwrap().exit, 3);
        let (_, done) = parse(&noisy, "other");
        assert!(!done);
    }
}

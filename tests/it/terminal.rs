//! What a user sees on a terminal: run under a pseudo-terminal (`script`),
//! the bytes rendered into a screen (`vt100`), and the screen checked.

use crate::common::Workspace;
use crate::registry_fixture::Registry;

/// Runs imagepipe with `args` on a 120×40 pseudo-terminal; returns the raw
/// bytes it drew and the final screen, line by line.
fn on_a_terminal(ws: &Workspace, args: &[&str], env: &[(&str, &str)]) -> (Vec<u8>, Vec<String>) {
    let bin = assert_cmd::cargo::cargo_bin("imagepipe");
    let line = std::iter::once(bin.display().to_string())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let mut c = std::process::Command::new("script");
    ws.clean_env(&mut c);
    c.args([
        "-qefc",
        &format!("stty cols 120 rows 40; exec {line}"),
        "/dev/null",
    ])
    .current_dir(ws.path())
    .env("TERM", "xterm-256color")
    .env("SOURCE_DATE_EPOCH", "1700000000")
    .stdin(std::process::Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("script (util-linux)");
    let mut parser = vt100::Parser::new(40, 120, 0);
    parser.process(&out.stdout);
    let screen = parser
        .screen()
        .contents()
        .lines()
        .map(str::to_owned)
        .collect();
    (out.stdout, screen)
}

fn catalog(addr: &str) -> String {
    format!(
        "version: 1\ntargets:\n  - {{ name: local, layout: ./.imagepipe/store }}\n  - {{ name: eu, registry: {addr}, namespace: eu, insecure: true }}\nimages:\n  - name: disk\n    os: {{ distro: ubuntu, version: \"24.04\" }}\n    source: {{ file: disk.raw }}\n    format: containerdisk\n"
    )
}

/// Bytes that do not compress: the layer is as large as the disk.
fn noise(mib: u32) -> Vec<u8> {
    (0..(mib << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8)
        .collect()
}

const BAR_MARKS: [&str; 3] = [" eta ", "(streaming)", "0 B/0 B"];

#[test]
fn a_publish_on_a_terminal_leaves_logs_and_the_table_and_no_bars() {
    let reg = Registry::start();
    let ws = Workspace::with_catalog(&catalog(&reg.addr));
    ws.write("disk.raw", noise(48));
    let (raw, screen) = on_a_terminal(&ws, &["publish"], &[]);
    let text = screen.join("\n");
    assert!(text.contains("RESULT"), "the final table:\n{text}");
    assert!(text.contains("pushed"), "{text}");
    for mark in BAR_MARKS {
        assert!(
            !screen.iter().any(|l| l.contains(mark)),
            "a bar line stayed on screen ({mark}):\n{text}"
        );
    }
    // Every log line starts a line of its own: none is glued to a bar.
    for l in screen
        .iter()
        .filter(|l| l.contains("INFO") || l.contains("WARN"))
    {
        let t = l.trim_start();
        assert!(
            t.starts_with("INFO") || t.starts_with("WARN"),
            "a log line drawn into something else: {l:?}\n{text}"
        );
    }
    // Logs are coloured on a terminal…
    assert!(
        String::from_utf8_lossy(&raw).contains("\u{1b}[32m"),
        "no colour on a terminal"
    );
    // …and the bars were drawn while it ran: hashing the 48 MiB source, the
    // build; none for the small config and manifest blobs.
    let drawn = String::from_utf8_lossy(&raw);
    assert!(
        drawn.contains("hashing "),
        "no bar while hashing the source"
    );
    assert!(drawn.contains("MiB"), "no progress was shown at all");
    // A bar's total is `…/<size>`: none in plain bytes or KiB.
    let tiny = regex::Regex::new(r"/\d+(\.\d+)? (B|KiB) ").unwrap();
    assert!(!tiny.is_match(&drawn), "a bar for a tiny blob: {drawn}");
    // The table says what moved and what was held.
    assert!(text.contains("MOVED") && text.contains("HELD"), "{text}");
}

/// `-vv` traces every HTTP request: method, URL without its query, status,
/// time; never a credential.
#[test]
fn very_verbose_traces_every_request() {
    let reg = Registry::start_with_auth("ci", "s3cret-Pa55");
    let ws = Workspace::with_catalog(&catalog(&reg.addr));
    ws.write("disk.raw", noise(1));
    let mut c = ws.cmd();
    c.args(["-vv", "plan", "--creds", "ci:s3cret-Pa55"]);
    let out = crate::common::run(c);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let traced: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("HTTP HEAD http://"))
        .collect();
    assert!(
        traced.iter().any(|l| l.contains("/v2/eu/disk/manifests/")
            && (l.contains("→ 200 in ") || l.contains("→ 404 in "))),
        "{}",
        out.stderr
    );
    assert!(
        traced.iter().any(|l| l.contains("→ 401 in ")),
        "the challenge too: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cret"), "{}", out.stderr);
    assert!(!out.stderr.contains("Authorization"), "{}", out.stderr);
}

#[test]
fn no_color_and_quiet_are_honoured_on_a_terminal() {
    let ws = Workspace::with_catalog(
        "version: 1\nimages:\n  - name: disk\n    os: { distro: ubuntu, version: \"24.04\" }\n    source: { file: disk.raw }\n    format: containerdisk\n",
    );
    ws.write("disk.raw", noise(8));
    let colour = |raw: &[u8]| String::from_utf8_lossy(raw).contains("\u{1b}[3");
    let (raw, _) = on_a_terminal(&ws, &["build", "--force"], &[("NO_COLOR", "1")]);
    assert!(!colour(&raw), "NO_COLOR: {}", String::from_utf8_lossy(&raw));
    let (raw, _) = on_a_terminal(&ws, &["build", "--force", "--color", "never"], &[]);
    assert!(
        !colour(&raw),
        "--color never: {}",
        String::from_utf8_lossy(&raw)
    );
    // -q: warnings and errors only, and no bars either.
    let (raw, screen) = on_a_terminal(&ws, &["build", "--force", "-q"], &[]);
    let drawn = String::from_utf8_lossy(&raw);
    assert!(!drawn.contains("INFO"), "{drawn}");
    assert!(
        !drawn.contains("MiB/s") && !drawn.contains("[="),
        "a bar under -q: {drawn}"
    );
    assert!(screen.iter().any(|l| l.starts_with("disk ")), "{screen:?}");
}

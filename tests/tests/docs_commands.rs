//! Every `fleet-publish`, `fleet-reporter` and `fleet-agent` command line in the
//! docs' shell examples is one the real binary accepts: the runbooks are copied by
//! operators as written, so a renamed flag or subcommand must fail here, not on a
//! production host.
//!
//! Each command line of a ```` ```sh ```` block (continuation lines joined, the shell
//! part after a pipe, redirection, `||`, `&&` or comment cut off, leading
//! `VAR=value` assignments dropped) is run as `BINARY ARGS… --help` with a clean
//! environment. Clap parses every argument before it acts on `--help`, so an unknown
//! flag, a missing subcommand or a flag value that does not parse fails with exit
//! code 2, while a line that parses prints the help and exits 0. Required arguments
//! are not checked (`--help` wins), and nothing touches a bucket. Elided arguments
//! (`…`) are dropped; a line that uses command substitution is skipped and counted.
//!
//! What each runbook *does* is proved by the feature's own test against SeaweedFS
//! (rollout.rs, retire.rs, cache_gc.rs, audit_s3.rs, trust_root.rs, e2e_fleet.rs, …).

use std::path::{Path, PathBuf};
use std::process::Command;

const BINARIES: [&str; 3] = ["fleet-publish", "fleet-reporter", "fleet-agent"];

/// One command line found in a doc.
#[derive(Debug)]
struct DocCommand {
    /// `docs/operations.md:123`.
    place: String,
    binary: &'static str,
    args: Vec<String>,
}

fn docs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

/// The logical lines (continuations joined) of every `sh` block of `text`, with the
/// line number each starts on.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_block = !in_block && matches!(trimmed.trim_end(), "```sh" | "```bash");
            pending = None;
            continue;
        }
        if !in_block {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        joined.push_str(line.trim());
        if let Some(stripped) = joined.strip_suffix('\\') {
            pending = Some((start, format!("{} ", stripped.trim_end())));
        } else {
            out.push((start, joined));
        }
    }
    out
}

/// The command part of a shell line: before a comment, pipe, redirection or list
/// operator outside quotes.
fn command_part(line: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' | b'|' | b'>' | b'<' | b'&' | b';' if !single && !double => {
                // `#` starts a comment only at a word's start.
                if b == b'#' && i > 0 && !bytes[i - 1].is_ascii_whitespace() {
                    continue;
                }
                return &line[..i];
            }
            _ => {}
        }
    }
    line
}

/// Every command line of the three binaries in `docs/*.md`, and how many lines were
/// skipped because they use command substitution.
fn doc_commands() -> (Vec<DocCommand>, usize) {
    let mut found = Vec::new();
    let mut skipped = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(docs_dir())
        .expect("reading docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (line_no, line) in shell_lines(&text) {
            let part = command_part(&line);
            let Some(words) = shlex::split(part) else {
                panic!("docs/{name}:{line_no}: unbalanced quotes in {line:?}");
            };
            // `VAR=value fleet-publish …`: the assignments are the shell's.
            let mut words = words
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .peekable();
            let Some(first) = words.next() else { continue };
            let Some(binary) = BINARIES.into_iter().find(|b| *b == first) else {
                continue;
            };
            if part.contains("$(") || part.contains('`') {
                skipped += 1;
                continue;
            }
            found.push(DocCommand {
                place: format!("docs/{name}:{line_no}"),
                binary,
                args: words.filter(|w| w != "…" && w != "...").collect(),
            });
        }
    }
    (found, skipped)
}

#[test]
fn the_splitter_reads_shell_lines_as_an_operator_types_them() {
    let text = "intro\n```sh\nfleet-publish hold --bucket s3://b \\\n  web-1 --reason \"a # b\"  # why\nAWS_X=1 fleet-publish gc | jq . > x\n```\n```toml\nfleet-publish = 1\n```\n";
    let lines = shell_lines(text);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].0, 3);
    assert_eq!(
        shlex::split(command_part(&lines[0].1)).unwrap(),
        [
            "fleet-publish",
            "hold",
            "--bucket",
            "s3://b",
            "web-1",
            "--reason",
            "a # b"
        ]
    );
    assert_eq!(command_part(&lines[1].1).trim(), "AWS_X=1 fleet-publish gc");
}

#[test]
fn every_documented_command_line_parses() {
    let (commands, skipped) = doc_commands();
    // The runbooks hold dozens of command lines; finding few means the extraction
    // broke, not that the docs are clean.
    assert!(
        commands.len() >= 60,
        "only {} command lines found in docs/",
        commands.len()
    );
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for c in &commands {
        let mut cmd = Command::new(fleet_tests::bin(c.binary));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", scratch.path())
            .current_dir(scratch.path())
            .args(&c.args)
            .arg("--help");
        let out = cmd.output().unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: {} {}\n    {}",
                c.place,
                c.binary,
                c.args.join(" "),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("(no message)")
            ));
        }
    }
    println!(
        "{} documented command lines parsed; {skipped} skipped (command substitution)",
        commands.len() - failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} documented command lines are refused by the binary:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

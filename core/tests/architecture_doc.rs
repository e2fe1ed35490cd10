//! Keeps `docs/architecture.md` true: every source file it names exists, and the
//! deployment it walks through stays short.
//!
//! A name is checked from the repository root, or else under each crate's `src/`
//! (the page writes `fetch/walk.rs` after introducing `agent/src/fetch/mod.rs`).

use std::path::Path;

const DOC: &str = include_str!("../../docs/architecture.md");
const CRATE_SOURCES: &[&str] = &["core/src", "publisher/src", "agent/src", "reporter/src"];
const FILE_ENDINGS: &[&str] = &[".rs", ".js", ".md", ".nix", ".toml", ".tf", ".sh"];

/// Every `code span` of the page that names a file (not a folder, bucket key or pattern).
fn named_files() -> Vec<&'static str> {
    DOC.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| FILE_ENDINGS.iter().any(|e| s.ends_with(e)))
        .filter(|s| !s.contains(['<', ' ', '*']))
        .collect()
}

#[test]
fn every_file_the_page_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let names = named_files();
    assert!(names.len() > 20, "found only {names:?}");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| {
            let candidates = std::iter::once(root.join(n))
                .chain(CRATE_SOURCES.iter().map(|c| root.join(c).join(n)));
            !candidates.into_iter().any(|p| p.is_file())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names files that do not exist: {missing:?}"
    );
}

#[test]
fn the_walk_through_stays_within_fifteen_steps() {
    let steps = DOC
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            t.split_once(". **")
                .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
        })
        .count();
    assert!(
        (10..=15).contains(&steps),
        "the walk-through has {steps} numbered steps, each a file; keep it to 15"
    );
}

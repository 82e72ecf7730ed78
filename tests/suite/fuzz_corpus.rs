//! Replays the committed fuzz corpus, `fuzz/corpus/<target>/`, through the
//! very checks the cargo-fuzz targets run (`fuzz/src/checks.rs`), on stable:
//! an input that once found a bug stays a test after the fix, and a change
//! that panics on any corpus input fails CI without nightly. The fuzzing
//! itself (nightly, cargo-fuzz) is in docs/fuzzing.md.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/checks.rs"]
mod checks;

/// The corpus stays small enough to replay in a second or two.
const MAX_FILES_PER_TARGET: usize = 250;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    assert!(
        files.len() <= MAX_FILES_PER_TARGET,
        "{} has {} files; minimize it (docs/fuzzing.md)",
        dir.display(),
        files.len()
    );
    files
}

/// Runs `target` on every file of its corpus, failing with the name of
/// every file that panicked; returns how many inputs were accepted.
fn replay(target: &str) -> usize {
    let files = corpus(target);
    let mut accepted = 0;
    let mut panicked = Vec::new();
    for (path, data) in &files {
        match catch_unwind(AssertUnwindSafe(|| checks::run(target, data))) {
            Ok(Some(ok)) => accepted += usize::from(ok),
            Ok(None) => panic!("no fuzz target is called {target}"),
            Err(_) => panicked.push(path.display().to_string()),
        }
    }
    assert!(
        panicked.is_empty(),
        "{target}: {} of {} corpus inputs panicked: {panicked:#?}",
        panicked.len(),
        files.len()
    );
    accepted
}

#[test]
fn every_target_has_a_corpus_and_nothing_else_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .expect("fuzz/corpus")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets = checks::TARGETS.map(String::from).to_vec();
    targets.sort();
    assert_eq!(dirs, targets);
}

// Each replay also checks that its corpus still reaches the accepting path
// of the code under test (a valid frame, ticket or config), not only its
// error paths: a corpus of garbage would pass without testing much.

#[test]
fn protocol_decode_corpus_replays_without_a_panic() {
    assert!(replay("protocol_decode") > 0);
}

#[test]
fn media_frame_corpus_replays_without_a_panic() {
    assert!(replay("media_frame") > 0);
}

#[test]
fn usersig_verify_corpus_replays_without_a_panic() {
    assert!(replay("usersig_verify") > 0);
}

#[test]
fn config_parse_corpus_replays_without_a_panic() {
    assert!(replay("config_parse") > 0);
}

//! Replays every committed fuzz input (`fuzz/corpus/<target>/*`, minimised corpora that
//! include every crash ever found) through the target bodies on the stable toolchain.

use std::path::Path;

#[test]
fn every_committed_fuzz_input_still_passes_its_target() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut failed = Vec::new();
    for (name, body) in dtca_fuzzing::TARGETS {
        let dir = corpus.join(name);
        // A fuzzer running meanwhile adds and removes files: take what is there.
        let mut inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "no corpus for {name}");
        for input in inputs {
            let Ok(data) = std::fs::read(&input) else {
                continue;
            };
            let outcome = std::panic::catch_unwind(|| body(&data));
            if outcome.is_err() {
                failed.push(format!("{name}: {}", input.display()));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail (see the panics above): {failed:#?}"
    );
}

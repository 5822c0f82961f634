//! The Python interop tools of the tests (pysaml2, Selenium): which interpreter has
//! them, and where test artifacts go.

use std::path::PathBuf;
use std::process::Command;

/// The cargo target directory of the running test binary (`target/debug/deps/x` → `target`).
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// An interpreter that imports every module of `modules`: `SYMBOLON_TEST_PYTHON`,
/// else the venv `scripts/test` makes (`target/test-venv`), else `python3`.
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("SYMBOLON_TEST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(target_dir().join("test-venv/bin/python3"));
    candidates.push(PathBuf::from("python3"));
    let check = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    candidates.into_iter().find(|py| Command::new(py).args(["-c", &check]).output().is_ok_and(|o| o.status.success()))
}

/// `python_with(modules)`, or `None` after printing why the test is skipped. With
/// `SYMBOLON_REQUIRE_INTEROP` set (CI), a missing tool fails instead.
pub fn python_or_skip(modules: &[&str], what: &str) -> Option<PathBuf> {
    let found = python_with(modules);
    if found.is_none() {
        let msg = format!("{what}: no Python with {modules:?} (scripts/test makes target/test-venv)");
        if std::env::var_os("SYMBOLON_REQUIRE_INTEROP").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIP: {msg}");
    }
    found
}

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

/// `python_with(modules)`. A missing tool fails the test (see [`missing_tool`]) unless
/// `SYMBOLON_SKIP_INTEROP=1`, when it prints why the test is skipped and returns `None`.
pub fn python_or_skip(modules: &[&str], what: &str) -> Option<PathBuf> {
    let found = python_with(modules);
    if found.is_none() {
        missing_tool(&format!("{what}: no Python with {modules:?} (scripts/test makes target/test-venv)"));
    }
    found
}

/// `SYMBOLON_SKIP_INTEROP=1`: interop tests whose outside tool (Python with pysaml2,
/// Selenium or schemathesis, Chromium) is missing are skipped instead of failing.
pub fn interop_may_skip() -> bool {
    std::env::var("SYMBOLON_SKIP_INTEROP").is_ok_and(|v| v == "1")
}

/// An interop test's tool is missing: panics with `msg`, unless
/// `SYMBOLON_SKIP_INTEROP=1` says to skip, then prints `SKIP: msg`. A test that can
/// silently pass without the tool it exists for tests nothing.
pub fn missing_tool(msg: &str) {
    if !interop_may_skip() {
        panic!("{msg} (set SYMBOLON_SKIP_INTEROP=1 to skip interop tests instead)");
    }
    eprintln!("SKIP: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interop_tool_fails_unless_skipping_is_asked_for() {
        // SAFETY: nextest runs this test alone in its process; nothing else reads the
        // environment meanwhile.
        unsafe { std::env::remove_var("SYMBOLON_SKIP_INTEROP") };
        assert!(!interop_may_skip());
        let failed = std::panic::catch_unwind(|| missing_tool("xmlsec1 missing"));
        assert!(failed.is_err(), "a missing tool fails by default");
        let python = std::panic::catch_unwind(|| python_or_skip(&["no_such_module_symbolon"], "t"));
        assert!(python.is_err(), "a Python without the module fails by default");
        // SAFETY: as above.
        unsafe { std::env::set_var("SYMBOLON_SKIP_INTEROP", "0") };
        assert!(std::panic::catch_unwind(|| missing_tool("x")).is_err(), "only 1 skips");
        // SAFETY: as above.
        unsafe { std::env::set_var("SYMBOLON_SKIP_INTEROP", "1") };
        missing_tool("xmlsec1 missing");
        assert!(python_or_skip(&["no_such_module_symbolon"], "t").is_none());
    }
}

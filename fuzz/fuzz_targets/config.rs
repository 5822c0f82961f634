//! The configuration: a TOML file composed with `SYMBOLON_*` environment variables and
//! checked section by section, exactly as `symbolon serve` loads it. Input: the TOML
//! text, then optionally a NUL byte and `SECTION__KEY=VALUE` lines that become
//! `SYMBOLON_SECTION__KEY` variables for this one run. Any input must return a
//! configuration or problems, never panic.
#![no_main]

/// Environment variables a run may set: upper-case letters, digits and underscores
/// after the `SYMBOLON_` prefix, so nothing else in the process (PATH, LD_*) changes.
fn env_pairs(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, v)| {
            !k.is_empty()
                && k.len() <= 64
                && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !v.contains('\0')
        })
        .take(8)
        .map(|(k, v)| (format!("SYMBOLON_{k}"), v.to_string()))
        .collect()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (toml, env) = text.split_once('\0').unwrap_or((text, ""));
    let vars = env_pairs(env);
    for (k, v) in &vars {
        // SAFETY: libFuzzer runs the target on one thread and nothing else in this
        // process reads the environment concurrently; every variable is removed below.
        unsafe { std::env::set_var(k, v) };
    }
    let _ = symbolon::config::Config::fuzz_compose(toml);
    for (k, _) in &vars {
        // SAFETY: as above.
        unsafe { std::env::remove_var(k) };
    }
});

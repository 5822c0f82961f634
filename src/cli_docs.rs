//! Man pages (section 8) and shell completions generated from the real clap tree,
//! so the packaged documentation cannot drift from the command line. The tree is
//! passed in (`Cli::command()`), so this module does not import the CLI it documents.

use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

const SECTION: &str = "8";

/// Writes `symbolon.8` and one `symbolon-<sub>[-<sub>].8` per visible subcommand of
/// `cmd` (the command tree) into `dir`.
pub fn write_man_pages(mut cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    cmd.build();
    write_page(dir, &cmd)
}

/// One page per command; after `build()` a subcommand's display name is `symbolon-<sub>`.
fn write_page(dir: &Path, cmd: &clap::Command) -> anyhow::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone())
        .section(SECTION)
        .manual("System Administration")
        .source(concat!("symbolon ", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render(&mut page).context("rendering man page")?;
    let path = dir.join(man.get_filename());
    std::fs::write(&path, page).with_context(|| format!("cannot write {}", path.display()))?;
    // `help` mirrors the tree it belongs to; it gets no pages of its own.
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_page(dir, sub)?;
    }
    Ok(())
}

/// Writes `symbolon.bash`, `_symbolon` (zsh) and `symbolon.fish` for `cmd` into `dir`.
pub fn write_completions(mut cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "symbolon", dir)
            .with_context(|| format!("writing {shell} completion"))?;
    }
    Ok(())
}

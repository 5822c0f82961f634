//! Man pages (section 8) and shell completions generated from the real clap tree,
//! so the packaged documentation cannot drift from the command line. The tree is
//! passed in (`Cli::command()`), so this module does not import the CLI it documents.

use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

const SECTION: &str = "8";

/// The tree as documented: without hidden subcommands (packaging tools) and without
/// the `help` subcommands, which get no page and no completion of their own (`--help`
/// stays), so that every page named in a SUBCOMMANDS section exists.
pub fn documented(cmd: clap::Command) -> clap::Command {
    let mut doc = clap::Command::new(cmd.get_name().to_string())
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .disable_help_subcommand(true);
    if let Some(v) = cmd.get_version() {
        doc = doc.version(v.to_string());
    }
    if let Some(t) = cmd.get_about() {
        doc = doc.about(t.clone());
    }
    if let Some(t) = cmd.get_long_about() {
        doc = doc.long_about(t.clone());
    }
    if let Some(t) = cmd.get_after_help() {
        doc = doc.after_help(t.clone());
    }
    if let Some(t) = cmd.get_after_long_help() {
        doc = doc.after_long_help(t.clone());
    }
    without_help_subcommands(doc)
}

fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    let mut cmd = cmd.disable_help_subcommand(true);
    for name in names {
        cmd = cmd.mut_subcommand(name, without_help_subcommands);
    }
    cmd
}

/// Writes `symbolon.8` and one `symbolon-<sub>[-<sub>].8` per visible subcommand of
/// `cmd` (the command tree) into `dir`.
pub fn write_man_pages(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = documented(cmd);
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
pub fn write_completions(cmd: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut cmd = documented(cmd);
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "symbolon", dir)
            .with_context(|| format!("writing {shell} completion"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> clap::Command {
        clap::Command::new("tool")
            .version("1.0")
            .about("A tool.")
            .arg(clap::Arg::new("config").long("config").global(true))
            .subcommand(
                clap::Command::new("keys")
                    .about("Keys.")
                    .subcommand(clap::Command::new("list").about("List."))
                    .subcommand(clap::Command::new("init").about("Init.")),
            )
            .subcommand(clap::Command::new("generate-man").hide(true).arg(clap::Arg::new("dir")))
    }

    #[test]
    fn hidden_commands_have_no_completion_and_pages_cite_only_pages_that_exist() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        write_completions(tree(), dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for name in ["tool.bash", "_tool", "tool.fish"] {
            let text = std::fs::read_to_string(dir.path().join(name.replace("tool", "symbolon")))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(text.contains("keys") && text.contains("list"), "{name}: {text}");
            assert!(!text.contains("generate-man"), "{name} completes a hidden command");
            assert!(!text.contains("help subcommand") && !text.contains("\"help\""), "{name}: {text}");
        }
        let man = dir.path().join("man");
        write_man_pages(tree(), &man).unwrap_or_else(|e| panic!("{e}"));
        let mut pages: Vec<String> = std::fs::read_dir(&man)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        pages.sort();
        assert_eq!(pages, ["tool-keys-init.8", "tool-keys-list.8", "tool-keys.8", "tool.8"]);
        for page in &pages {
            let text = std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{e}"));
            // Cross-references are written `tool\-keys(8)`.
            for reference in text.split_whitespace().filter(|w| w.ends_with("(8)")) {
                let target = format!("{}.8", reference.trim_end_matches("(8)").replace("\\-", "-"));
                assert!(pages.contains(&target), "{page} cites {reference}, which does not exist");
            }
        }
    }
}

//! `symbolon`: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    symbolon::cli::run(symbolon::cli::Cli::parse())
}

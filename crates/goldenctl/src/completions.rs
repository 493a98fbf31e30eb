//! `completions SHELL` and `man`: generated from the same clap definition that parses the command line, so
//! they cannot drift from it.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap_complete::Shell;

/// The shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

impl From<CompletionShell> for Shell {
    fn from(s: CompletionShell) -> Shell {
        match s {
            CompletionShell::Bash => Shell::Bash,
            CompletionShell::Zsh => Shell::Zsh,
            CompletionShell::Fish => Shell::Fish,
        }
    }
}

/// Prints the completion script for `shell` to stdout.
pub fn completions(mut cmd: clap::Command, shell: CompletionShell) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(Shell::from(shell), &mut cmd, name, &mut std::io::stdout());
}

/// Prints goldenctl's man page to stdout, or with `dir` writes one page per command and subcommand there
/// (goldenctl.1, goldenctl-check.1, goldenctl-recipes-push.1, ...).
pub fn man(cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<()> {
    match dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("cannot write the man pages to {}", dir.display()))?;
            eprintln!("goldenctl: man pages written to {}", dir.display());
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("cannot render the man page")?;
            std::io::stdout()
                .write_all(&page)
                .context("cannot write the man page to stdout")?;
        }
    }
    Ok(())
}

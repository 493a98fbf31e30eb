//! The terminal: colour, progress and confirmation only where a person is watching. Piped or redirected
//! output, and `NO_COLOR`, get plain text; a destructive command off a terminal needs `--yes`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::output::Format;

/// Colour on stdout: only a terminal, and never with `NO_COLOR` set to a non-empty value (no-color.org).
pub fn colour_wanted(stdout_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stdout_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Decides colour once, for every styled word the commands print.
pub fn init_colour() {
    let on = colour_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    console::set_colors_enabled(on);
    console::set_colors_enabled_stderr(on && std::io::stderr().is_terminal());
}

/// A word coloured by what it means: good (current, succeeded, ok), warning (stale, planned) or bad
/// (revoked, failed). Plain when colour is off.
pub fn good(word: &str) -> String {
    console::style(word).green().to_string()
}

pub fn warn(word: &str) -> String {
    console::style(word).yellow().to_string()
}

pub fn bad(word: &str) -> String {
    console::style(word).red().bold().to_string()
}

/// [`good`] and [`bad`] for stderr: coloured only if stderr is a terminal too.
pub fn good_stderr(word: &str) -> String {
    console::style(word).for_stderr().green().to_string()
}

pub fn bad_stderr(word: &str) -> String {
    console::style(word).for_stderr().red().bold().to_string()
}

/// Lines of progress on stderr, each with the elapsed time; on a terminal also a spinner with the
/// current step and its elapsed time.
pub struct Progress {
    started: Instant,
    spinner: Option<ProgressBar>,
}

impl Progress {
    pub fn new(message: &str) -> Self {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(120));
            bar.set_message(message.to_owned());
            bar
        });
        Self {
            started: Instant::now(),
            spinner,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// What is happening now (the spinner's text; nothing off a terminal, where `line` says it).
    pub fn set(&self, message: &str) {
        if let Some(bar) = &self.spinner {
            bar.set_message(message.to_owned());
        }
    }

    /// One line that stays: `[  1m05s] text`.
    pub fn line(&self, text: &str) {
        let line = format!("[{:>7}] {text}", clock(self.elapsed()));
        match &self.spinner {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.spinner {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `5s`, `1m05s`, `1h02m03s`.
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s / 60) % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// `--yes` and `--dry-run`, on every command that changes something.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct ActArgs {
    /// Act without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show the plan; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// What to do once the plan is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    /// `--dry-run`, or nothing to do: stop after the plan.
    Plan,
    Act,
}

/// Whether [`confirm`] will ask a person (a terminal, no `--yes`, no `--dry-run`, something to do).
pub fn will_ask(act: ActArgs, nothing_to_do: bool) -> bool {
    !(act.dry_run || act.yes || nothing_to_do)
        && std::io::stdin().is_terminal()
        && std::io::stderr().is_terminal()
}

/// Shows a plan before [`confirm`]: as a table on stdout; with `--output json` (whose stdout is the final
/// report), as a table on stderr, and only when a person is about to be asked about it.
pub fn show_plan<T>(
    format: Format,
    act: ActArgs,
    nothing_to_do: bool,
    plan: &T,
    render: fn(&T) -> String,
) {
    match format {
        Format::Table => println!("{}", render(plan)),
        Format::Json if will_ask(act, nothing_to_do) => eprintln!("{}", render(plan)),
        Format::Json => {}
    }
}

/// After the plan: `--dry-run` plans only; `--yes` acts; on a terminal the person is asked (default no);
/// anywhere else this refuses, naming the flags. `nothing_to_do` skips the question.
pub fn confirm(act: ActArgs, question: &str, nothing_to_do: bool) -> anyhow::Result<Go> {
    if act.dry_run || nothing_to_do {
        return Ok(Go::Plan);
    }
    if act.yes {
        return Ok(Go::Act);
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        bail!("not confirmed: stdin is not a terminal, so nothing was changed; pass --yes to {question}, or --dry-run to only see the plan");
    }
    let yes = dialoguer::Confirm::new()
        .with_prompt(format!("{question}?"))
        .default(false)
        .interact()?;
    if !yes {
        bail!("declined: nothing was changed");
    }
    Ok(Go::Act)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_wanted(true, None));
        assert!(!colour_wanted(false, None));
        assert!(!colour_wanted(true, Some("1".into())));
        assert!(
            colour_wanted(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
    }

    #[test]
    fn clock_reads_naturally() {
        assert_eq!(clock(Duration::from_secs(5)), "5s");
        assert_eq!(clock(Duration::from_secs(65)), "1m05s");
        assert_eq!(clock(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn dry_run_plans_and_yes_acts_without_asking() {
        let dry = ActArgs {
            yes: true,
            dry_run: true,
        };
        assert_eq!(confirm(dry, "x", false).unwrap(), Go::Plan);
        let yes = ActArgs {
            yes: true,
            dry_run: false,
        };
        assert_eq!(confirm(yes, "x", false).unwrap(), Go::Act);
        assert_eq!(confirm(yes, "x", true).unwrap(), Go::Plan);
    }
}

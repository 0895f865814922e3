//! One voice for everything genv says on stderr that is its own (genv
//! 1.4.3's messages, which clients match on, stay byte for byte and are
//! printed as they are):
//!
//! ```text
//! genv: error: <what went wrong, naming the file or value>
//! genv: warning: <what happened and what genv did about it>
//! hint: <what to do about it>
//! genv: <progress, such as a place in line>
//! ```
//!
//! Text that comes from the shared state goes through [`crate::escape`]
//! before it reaches these functions. This module and the printer of
//! `Context` (`context.rs`) are the only code that writes to stderr or
//! stdout (clippy's `print_stdout`/`print_stderr` lints hold everywhere
//! else); `error::report` prints the error that ends a program through it.

use std::fmt::Display;
use std::io::Write;

const PREFIX: &str = "genv";

/// `genv: warning: …`, with a `hint:` line when a fix is known.
pub(crate) fn warn(message: impl Display) {
    say(&format!("{PREFIX}: warning: {message}"), None);
}

/// `genv: warning: …` followed by `hint: …`.
pub(crate) fn warn_hint(message: impl Display, hint: impl Display) {
    say(
        &format!("{PREFIX}: warning: {message}"),
        Some(&hint.to_string()),
    );
}

/// `genv: error: …`, with a `hint:` line when a fix is known. For errors
/// that do not end the command; those that do are returned as errors and
/// printed by `error::report`.
pub(crate) fn error(message: impl Display, hint: Option<&str>) {
    say(&format!("{PREFIX}: error: {message}"), hint);
}

/// What clap made (the help of `activate` and `deactivate`, which the
/// shell function evals), on stderr as it is.
pub(crate) fn clap_error(text: impl Display) {
    if crate::caller::say(&text.to_string()) {
        return;
    }
    let _ = write!(std::io::stderr().lock(), "{text}");
}

/// `genv: …`: progress a user waiting on genv wants to see.
pub(crate) fn note(message: impl Display) {
    say(&format!("{PREFIX}: {message}"), None);
}

/// A line printed as it is: genv 1.4.3's texts (`error::reference`).
pub(crate) fn raw_line(line: &str) {
    say(line, None);
}

/// A line said elsewhere, passed on as it is: what a remote host printed
/// on stderr (prefixed with its name), the decisions of a remote
/// enforcement in genv 1.4.3's words.
pub(crate) fn relay(line: impl Display) {
    say(&line.to_string(), None);
}

/// Text said elsewhere, whole lines with their newlines, passed on as it
/// is: what the daemon's verb said on stderr.
pub(crate) fn relay_raw(text: &str) {
    if crate::caller::say(text) {
        return;
    }
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn say(line: &str, hint: Option<&str>) {
    let mut text = String::with_capacity(line.len() + 1);
    text.push_str(line);
    text.push('\n');
    if let Some(hint) = hint {
        text.push_str("hint: ");
        text.push_str(hint);
        text.push('\n');
    }
    // A verb run by the daemon: in the client's answer.
    if crate::caller::say(&text) {
        return;
    }
    // Unit tests: through the test harness, which keeps a passing test's
    // messages out of the run's output.
    if cfg!(test) {
        #[allow(clippy::print_stderr)] // the printer: the harness captures only this
        {
            eprint!("{text}");
        }
        return;
    }
    // One write, so lines of concurrent genv processes do not interleave;
    // a closed stderr is not worth failing over.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

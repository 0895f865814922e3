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
//! before it reaches these functions.

use std::fmt::Display;
use std::io::Write;

const PREFIX: &str = "genv";

/// `genv: warning: …`, with a `hint:` line when a fix is known.
pub fn warn(message: impl Display) {
    say(&format!("{PREFIX}: warning: {message}"), None);
}

/// `genv: warning: …` followed by `hint: …`.
pub fn warn_hint(message: impl Display, hint: impl Display) {
    say(
        &format!("{PREFIX}: warning: {message}"),
        Some(&hint.to_string()),
    );
}

/// `genv: error: …`, with a `hint:` line when a fix is known. For errors
/// that do not end the command; those that do are returned as
/// [`crate::error::Error`] and printed by `main` through [`error_line`].
pub fn error(message: impl Display, hint: Option<&str>) {
    say(&format!("{PREFIX}: error: {message}"), hint);
}

/// `genv: …`: progress a user waiting on genv wants to see.
pub fn note(message: impl Display) {
    say(&format!("{PREFIX}: {message}"), None);
}

/// The text of an error line, as `main` prints it.
pub fn error_line(message: impl Display) -> String {
    format!("{PREFIX}: error: {message}")
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
    // Unit tests: through the test harness, which keeps a passing test's
    // messages out of the run's output.
    if cfg!(test) {
        eprint!("{text}");
        return;
    }
    // One write, so lines of concurrent genv processes do not interleave;
    // a closed stderr is not worth failing over.
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

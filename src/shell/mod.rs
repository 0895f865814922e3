//! The shells genv integrates with: their init scripts (real files, loaded
//! with `include_str!`) and how each one quotes what genv prints for it to
//! eval. Names and values are data, never code, in every shell.

use std::fmt::Write;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// One change to the shell's variables, rendered per shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set (and export) a variable, remembering the old value.
    Set(&'static str, String),
    /// Remove a variable, remembering the old value.
    Unset(&'static str),
    /// Put a folder first on `PATH`.
    PrependPath(String),
    /// Prefix the prompt with `(genv) `.
    Prompt,
    /// Put the memory cap library first in `LD_PRELOAD` (`Some`), or put
    /// back what `LD_PRELOAD` held before (`None`).
    Preload(Option<String>),
    /// Put back everything the actions above changed.
    Restore,
}

impl Shell {
    /// The shell whose pid the shell function passed (`--shell $$`).
    pub fn of_pid(pid: i64) -> Shell {
        let comm = u32::try_from(pid)
            .ok()
            .and_then(crate::os::procs::comm)
            .unwrap_or_default();
        match comm.trim_start_matches('-') {
            "zsh" => Shell::Zsh,
            "fish" => Shell::Fish,
            "bash" | "sh" => Shell::Bash,
            _ => Shell::detect(),
        }
    }

    /// The shell that runs us: our parent process, or bash.
    pub fn detect() -> Shell {
        let parent = rustix::process::getppid()
            .and_then(|pid| crate::os::procs::comm(pid.as_raw_nonzero().get() as u32))
            .unwrap_or_default();
        match parent.trim_start_matches('-') {
            "zsh" => Shell::Zsh,
            "fish" => Shell::Fish,
            _ => Shell::Bash,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shell::Bash => "bash",
            Shell::Zsh => "zsh",
            Shell::Fish => "fish",
        }
    }

    pub fn init(self) -> String {
        match self {
            Shell::Bash | Shell::Zsh => include_str!("init.sh").replace("@SHELL@", self.name()),
            Shell::Fish => include_str!("init.fish").to_owned(),
        }
    }

    pub fn deinit(self) -> &'static str {
        match self {
            Shell::Bash | Shell::Zsh => {
                "unset -f genv __genv_set __genv_unset __genv_remember __genv_restore __genv_preload\n"
            }
            Shell::Fish => {
                "functions -e genv __genv_set __genv_unset __genv_remember __genv_restore __genv_preload __genv_prompt_on\n"
            }
        }
    }

    /// A single-quoted word that the shell reads back as exactly `value`.
    pub fn quote(self, value: &str) -> String {
        match self {
            // Inside single quotes nothing is special but the quote itself.
            Shell::Bash | Shell::Zsh => format!("'{}'", value.replace('\'', r"'\''")),
            // fish also treats the backslash as an escape inside them.
            Shell::Fish => format!("'{}'", value.replace('\\', r"\\").replace('\'', r"\'")),
        }
    }

    pub fn render(self, actions: &[Action]) -> String {
        let mut code = String::new();
        for action in actions {
            let _ = match (action, self) {
                (Action::Set(name, value), _) => {
                    writeln!(code, "__genv_set {name} {}", self.quote(value))
                }
                (Action::Unset(name), _) => writeln!(code, "__genv_unset {name}"),
                (Action::PrependPath(dir), Shell::Fish) => {
                    writeln!(code, "__genv_set PATH {} $PATH", self.quote(dir))
                }
                (Action::PrependPath(dir), _) => {
                    writeln!(
                        code,
                        "__genv_set PATH {}\"${{PATH:+:$PATH}}\"",
                        self.quote(dir)
                    )
                }
                (Action::Prompt, Shell::Fish) => writeln!(code, "__genv_prompt_on"),
                (Action::Prompt, _) => writeln!(code, "__genv_set PS1 '(genv) '\"${{PS1-}}\""),
                (Action::Preload(Some(library)), _) => {
                    writeln!(code, "__genv_preload {}", self.quote(library))
                }
                (Action::Preload(None), _) => writeln!(code, "__genv_preload"),
                (Action::Restore, _) => writeln!(code, "__genv_restore"),
            };
        }
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(Shell::Bash.quote("a'b"), r"'a'\''b'");
        assert_eq!(Shell::Zsh.quote("$(x)`y`"), "'$(x)`y`'");
        assert_eq!(Shell::Fish.quote(r"a\'b"), r"'a\\\'b'");
    }

    #[test]
    fn rendering() {
        let actions = [
            Action::Set("GENV_ENVIRONMENT_NAME", "x;y".into()),
            Action::Unset("GENV_GPUS"),
            Action::PrependPath("/s".into()),
            Action::Prompt,
        ];
        assert_eq!(
            Shell::Bash.render(&actions),
            "__genv_set GENV_ENVIRONMENT_NAME 'x;y'\n__genv_unset GENV_GPUS\n__genv_set PATH '/s'\"${PATH:+:$PATH}\"\n__genv_set PS1 '(genv) '\"${PS1-}\"\n"
        );
        assert!(
            Shell::Fish
                .render(&actions)
                .contains("__genv_set PATH '/s' $PATH\n__genv_prompt_on\n")
        );
    }
}

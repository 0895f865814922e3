//! Interactive bash in a real terminal (tmux): the prompt prefix comes and
//! goes, and completion finds genv's verbs. Each step signals a tmux
//! channel when it is done (`tmux wait-for`), so nothing waits on a timer.

use std::path::Path;
use std::process::Command;

use crate::common::Sandbox;

struct Tmux {
    socket: String,
    session: String,
}

impl Tmux {
    fn new(sb: &Sandbox) -> Tmux {
        Tmux::with_shell(sb, &["bash", "--norc", "--noprofile", "-i"])
    }

    fn with_shell(sb: &Sandbox, shell: &[&str]) -> Tmux {
        let socket = sb.dir.path().join("tmux.sock").to_str().unwrap().to_owned();
        let tmux = Tmux {
            socket,
            session: "genv".into(),
        };
        let bin = Path::new(crate::common::GENV).parent().unwrap();
        let mut cmd = Command::new("tmux");
        cmd.args([
            "-S",
            &tmux.socket,
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            &tmux.session,
            "-x",
            "200",
            "-y",
            "50",
        ]);
        cmd.args([
            "env",
            "-i",
            &format!("PATH={}:/usr/bin:/bin", bin.display()),
            "TERM=xterm",
        ]);
        for (name, value) in &sb.vars {
            cmd.arg(format!("{name}={value}"));
        }
        cmd.arg(format!("HOME={}", sb.dir.path().display()));
        cmd.args(shell);
        let status = cmd
            .status()
            .expect("tmux is not installed; scripts/test installs it");
        assert!(status.success());
        tmux
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-S", &self.socket])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types a line and waits until the shell has run it.
    fn run(&self, line: &str) {
        self.tmux(&[
            "send-keys",
            "-t",
            &self.session,
            "-l",
            &format!("{line}; tmux -S {} wait-for -S step\n", self.socket),
        ]);
        self.tmux(&["wait-for", "step"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.session])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-S", &self.socket, "kill-server"])
            .status();
    }
}

#[test]
fn prompt_and_completion_in_an_interactive_bash() {
    let sb = Sandbox::new();
    let tmux = Tmux::new(&sb);
    tmux.run("PS1='ready> '");
    tmux.run("eval \"$(genv shell --init bash)\"");
    tmux.run("source <(genv shell --completions bash)");
    tmux.run("genv activate --name tmux");
    tmux.run("clear");
    tmux.run("true");
    let screen = tmux.screen();
    assert!(screen.contains("(genv) ready> true"), "{screen}");

    // Completion: "genv sta<Tab>" becomes "genv status".
    tmux.tmux(&["send-keys", "-t", &tmux.session, "-l", "genv sta"]);
    tmux.tmux(&["send-keys", "-t", &tmux.session, "Tab"]);
    tmux.run(" > /dev/null");
    let screen = tmux.screen();
    assert!(
        screen.contains("(genv) ready> genv status  > /dev/null"),
        "{screen}"
    );

    tmux.run("genv deactivate");
    tmux.run("clear");
    tmux.run("true");
    let screen = tmux.screen();
    assert!(screen.contains("ready> true"), "{screen}");
    assert!(!screen.contains("(genv)"), "{screen}");
}

#[test]
fn prompt_in_an_interactive_fish() {
    let sb = Sandbox::new();
    let tmux = Tmux::with_shell(&sb, &["fish", "--no-config", "-i"]);
    tmux.run("function fish_prompt; printf 'ready> '; end");
    tmux.run("genv shell --init fish | source");
    tmux.run("genv activate --name tmux");
    tmux.run("clear");
    tmux.run("true");
    let screen = tmux.screen();
    assert!(screen.contains("(genv) ready> true"), "{screen}");
    tmux.run("genv deactivate");
    tmux.run("clear");
    tmux.run("true");
    let screen = tmux.screen();
    assert!(screen.contains("ready> true"), "{screen}");
    assert!(!screen.contains("(genv)"), "{screen}");
}

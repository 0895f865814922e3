//! Messages, output and exit codes compared with what genv 1.4.3 really
//! printed (`tests/fixtures/ref/misc/`, with the command line of each in its
//! README.txt), outside any environment, with no `.genv` folder.

use crate::common::{Run, Sandbox, fixture};

fn compare(name: &str, args: &[&str]) {
    let sb = Sandbox::new();
    let empty = sb.dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut cmd = sb.cmd(args);
    cmd.current_dir(&empty).env("HOME", &empty);
    let run = Run::from(cmd.output().unwrap());
    let read =
        |ext: &str| std::fs::read_to_string(fixture(&format!("ref/misc/{name}.{ext}"))).unwrap();
    assert_eq!(run.stdout, read("stdout"), "{name}: stdout");
    assert_eq!(run.stderr, read("stderr"), "{name}: stderr");
    assert_eq!(run.code.to_string(), read("rc").trim(), "{name}: exit code");
}

#[test]
fn same_as_the_reference_outside_an_environment() {
    for (name, args) in [
        ("home-none", &["home"][..]),
        ("home-none-quiet", &["home", "-q"]),
        ("version", &["version"]),
        ("status-outside", &["status"]),
        ("activate-no-shell", &["activate"]),
        ("activate-no-shell-gpus", &["activate", "--gpus", "1"]),
        ("deactivate-no-shell", &["deactivate"]),
        ("attach-outside", &["attach"]),
        ("detach-outside", &["detach"]),
        ("config-outside", &["config"]),
        ("shell-noargs", &["shell"]),
        ("shell-ok", &["shell", "--ok"]),
        ("shell-reattach-outside", &["shell", "--reattach"]),
        ("shell-reconfigure-outside", &["shell", "--reconfigure"]),
        ("lock-outside", &["lock"]),
    ] {
        compare(name, args);
    }
}

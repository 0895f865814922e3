//! `genv lock` between environments that share one GPU: who may hold it
//! together, who waits, and genv 1.4.3 (a plain `flock -x`) among them.

use std::process::Command;

use crate::lock_support::{Locker, Section, args, env, log, one_gpu, within};

/// Two environments over-subscribing a GPU whole: the second waits, says
/// for whom, and enters only after the first leaves.
#[test]
fn whole_device_environments_take_turns() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _b = env(&sb, "b", None);
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "B"),
    );

    let cmd_a = first.command();
    let holder = Locker::spawn(&sb, Some("a"), &args(&[], &cmd_a));
    first.entered();
    let cmd_b = second.command();
    let mut waiter = Locker::spawn(&sb, Some("b"), &args(&[], &cmd_b));
    let line = waiter.expect_line("waiting for GPU 0");
    assert!(line.contains("environment a"), "{line}");
    assert!(line.contains("job-a") && line.contains("root(0)"), "{line}");
    assert!(line.contains(&format!("pid {}", holder.pid())), "{line}");

    // The table names the holder and the waiter.
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert!(
        table.stdout.contains(&format!(
            "0,a,job-a,root(0),{},exclusive,holding",
            holder.pid()
        )),
        "{table:?}"
    );
    assert!(
        table.stdout.contains(&format!(
            "0,b,job-b,root(0),{},exclusive,waiting",
            waiter.pid()
        )),
        "{table:?}"
    );

    first.release();
    second.entered();
    second.release();
    assert!(holder.finish().0.success());
    assert!(waiter.finish().0.success());
    assert_eq!(log(work.path()), ["in A", "out A", "in B", "out B"]);
}

/// Two 7gi environments fit a 16g GPU: both are inside at once.
#[test]
fn fractions_that_fit_hold_the_device_together() {
    let sb = one_gpu();
    let _a = env(&sb, "a", Some("7gi"));
    let _b = env(&sb, "b", Some("7gi"));
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "B"),
    );
    let (cmd_a, cmd_b) = (first.command(), second.command());

    let a = Locker::spawn(&sb, Some("a"), &args(&[], &cmd_a));
    first.entered();
    let b = Locker::spawn(&sb, Some("b"), &args(&[], &cmd_b));
    second.entered();
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(
        table.stdout.matches("fraction:7168mi,holding").count(),
        2,
        "{table:?}"
    );
    first.release();
    second.release();
    assert!(a.finish().0.success());
    assert!(b.finish().0.success());
    assert_eq!(&log(work.path())[..2], ["in A", "in B"]);
}

/// Two 10gi environments do not fit a 16g GPU: the second waits.
#[test]
fn fractions_that_do_not_fit_take_turns() {
    let sb = one_gpu();
    let _a = env(&sb, "a", Some("10gi"));
    let _b = env(&sb, "b", Some("10gi"));
    let work = tempfile::tempdir().unwrap();
    let (first, second) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "B"),
    );
    let (cmd_a, cmd_b) = (first.command(), second.command());

    let a = Locker::spawn(&sb, Some("a"), &args(&[], &cmd_a));
    first.entered();
    let mut b = Locker::spawn(&sb, Some("b"), &args(&[], &cmd_b));
    let line = b.expect_line("waiting for GPU 0");
    assert!(
        line.contains("environment a") && line.contains("fraction"),
        "{line}"
    );
    let busy = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "b")
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1));
    first.release();
    second.entered();
    second.release();
    assert!(a.finish().0.success());
    assert!(b.finish().0.success());
    assert_eq!(log(work.path()), ["in A", "out A", "in B", "out B"]);
}

/// A fraction waits for a whole-device holder, and the other way round.
#[test]
fn whole_device_and_fraction_exclude_each_other() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _b = env(&sb, "b", Some("1gi"));
    let work = tempfile::tempdir().unwrap();
    let first = Section::new(work.path(), "A");
    let cmd_a = first.command();

    let a = Locker::spawn(&sb, Some("b"), &args(&[], &cmd_a));
    first.entered();
    let whole = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    assert_eq!(whole.status.code(), Some(1), "{whole:?}");
    // --shared uses no memory: it fits beside the fraction.
    let shared = sb
        .cmd(&["lock", "-n", "-s", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    assert_eq!(shared.status.code(), Some(0), "{shared:?}");
    first.release();
    assert!(a.finish().0.success());
    let whole = sb
        .cmd(&["lock", "-n", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    assert_eq!(whole.status.code(), Some(0), "{whole:?}");
}

/// Arrival order is kept: a small fraction that would fit does not jump a
/// larger one that waits before it.
#[test]
fn waiters_enter_in_arrival_order() {
    let sb = one_gpu();
    let _a = env(&sb, "a", Some("10gi"));
    let _b = env(&sb, "b", Some("10gi"));
    let _c = env(&sb, "c", Some("4gi"));
    let work = tempfile::tempdir().unwrap();
    let (sa, sb_, sc) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "B"),
        Section::new(work.path(), "C"),
    );
    let (ca, cb, cc) = (sa.command(), sb_.command(), sc.command());
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let mut b = Locker::spawn(&sb, Some("b"), &args(&[], &cb));
    b.expect_line("waiting for GPU 0");
    let mut c = Locker::spawn(&sb, Some("c"), &args(&[], &cc));
    let line = c.expect_line("waiting for GPU 0");
    // B waits too: it is ahead of C in line, not using the device.
    assert!(
        line.starts_with("genv: waiting for GPU 0 (held by environment a (job-a), root(0), pid ")
            && line.contains("; waiting ahead: environment b (job-b), root(0), pid ")
            && !line.contains("in use"),
        "{line}"
    );
    sa.release();
    sb_.entered();
    // 10gi + 4gi fit 16g: C joins B.
    sc.entered();
    sb_.release();
    sc.release();
    for locker in [a, b, c] {
        assert!(locker.finish().0.success());
    }
    // C would have fitted beside A (10gi + 4gi) but came after B: it
    // entered only after A left, together with B (in either order).
    let records = log(work.path());
    assert_eq!(&records[..2], ["in A", "out A"], "{records:?}");
    let mut next = records[2..4].to_vec();
    next.sort();
    assert_eq!(next, ["in B", "in C"], "{records:?}");
}

/// A waiter killed with SIGKILL leaves the queue; the next one gets in.
#[test]
fn a_killed_waiter_does_not_hold_up_the_queue() {
    let sb = one_gpu();
    let _a = env(&sb, "a", Some("10gi"));
    let _b = env(&sb, "b", Some("10gi"));
    let _c = env(&sb, "c", Some("10gi"));
    let work = tempfile::tempdir().unwrap();
    let (sa, sc) = (
        Section::new(work.path(), "A"),
        Section::new(work.path(), "C"),
    );
    let (ca, cc) = (sa.command(), sc.command());
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let mut b = Locker::spawn(&sb, Some("b"), &["sh", "-c", "echo B >> log"]);
    b.expect_line("waiting for GPU 0");
    let mut c = Locker::spawn(&sb, Some("c"), &args(&[], &cc));
    c.expect_line("environment b");
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    sa.release();
    sc.entered();
    sc.release();
    assert!(a.finish().0.success());
    assert!(c.finish().0.success());
    assert_eq!(log(work.path()), ["in A", "out A", "in C", "out C"]);
}

fn flock_holder(sb: &crate::common::Sandbox, section: &Section, mode: &str) -> std::process::Child {
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    let mut cmd = Command::new("flock");
    cmd.arg(mode)
        .arg(sb.file("devices/0.lock"))
        .args(section.command());
    cmd.spawn().expect("flock(1) from util-linux")
}

/// genv 1.4.3 holds `flock(LOCK_EX)` on `devices/0.lock` for the whole
/// run, as `flock -x` does: a fraction waits for it, names it, and gets in
/// when it leaves.
#[test]
fn a_genv_1_4_3_holder_excludes_fractions() {
    let sb = one_gpu();
    let _b = env(&sb, "b", Some("1gi"));
    let work = tempfile::tempdir().unwrap();
    let (sf, sb_) = (
        Section::new(work.path(), "F"),
        Section::new(work.path(), "B"),
    );
    let cb = sb_.command();
    let mut flock = flock_holder(&sb, &sf, "-x");
    sf.entered();
    let mut b = Locker::spawn(&sb, Some("b"), &args(&[], &cb));
    let line = b.expect_line("waiting for GPU 0");
    assert!(line.contains(&format!("pid {}", flock.id())), "{line}");
    assert!(line.contains("exclusive"), "{line}");
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert!(
        table
            .stdout
            .contains(&format!("0,,,root(0),{},exclusive,holding", flock.id())),
        "{table:?}"
    );
    sf.release();
    sb_.entered();
    sb_.release();
    assert!(within("flock to exit", move || flock.wait().unwrap()).success());
    assert!(b.finish().0.success());
    assert_eq!(log(work.path()), ["in F", "out F", "in B", "out B"]);
}

/// And the other way round: while fractions hold the device, a genv 1.4.3
/// process (`flock -x`) cannot have it.
#[test]
fn fractions_exclude_a_genv_1_4_3_process() {
    let sb = one_gpu();
    let _a = env(&sb, "a", Some("7gi"));
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    let lock = sb.file("devices/0.lock");
    let busy = Command::new("flock")
        .args(["-n", "-x"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap();
    assert_eq!(busy.code(), Some(1));
    sa.release();
    assert!(a.finish().0.success());
    let free = Command::new("flock")
        .args(["-n", "-x"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap();
    assert!(free.success());
}

/// An environment on two GPUs holds both locks while its command runs.
#[test]
fn every_attached_device_is_locked() {
    let sb = crate::common::Sandbox::new();
    let _a = env(&sb, "a", None);
    sb.run(&["devices", "attach", "--eid", "a", "--index", "1"])
        .ok();
    let work = tempfile::tempdir().unwrap();
    let sa = Section::new(work.path(), "A");
    let ca = sa.command();
    let a = Locker::spawn(&sb, Some("a"), &args(&[], &ca));
    sa.entered();
    for index in ["0", "1"] {
        let lock = sb.file(&format!("devices/{index}.lock"));
        let busy = Command::new("flock")
            .args(["-n", "-s"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap();
        assert_eq!(busy.code(), Some(1), "GPU {index} should be locked");
    }
    let table = sb
        .run(&["devices", "locks", "--format", "csv", "--no-header"])
        .ok();
    assert_eq!(table.stdout.matches(",a,job-a,").count(), 2, "{table:?}");
    sa.release();
    assert!(a.finish().0.success());
}

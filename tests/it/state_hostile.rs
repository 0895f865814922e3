//! The state folder is shared by every local user, root included: nothing
//! one of them plants there (links, FIFOs, folders, torn or hostile files)
//! makes genv write outside it, widen a file's mode, or drop the other
//! users' environments.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{Sandbox, Sleeper};
use crate::lock_support::{env, one_gpu};

fn activate(sb: &Sandbox, eid: &str, job: &Sleeper) {
    sb.run(&[
        "envs",
        "activate",
        "--eid",
        eid,
        "--uid",
        "1000",
        "--pid",
        &job.pid().to_string(),
    ])
    .ok();
}

fn name(sb: &Sandbox, eid: &str, name: &str) {
    sb.run(&["envs", "config", "--eid", eid, "name", "--name", name])
        .ok();
}

/// `eid,name` of every environment.
fn names(sb: &Sandbox) -> String {
    sb.run(&["envs", "query", "--query", "eid", "config.name"])
        .ok()
        .stdout
}

/// The entries of the state folder whose name starts with `prefix`.
fn beside(sb: &Sandbox, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(sb.state())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn entries(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn warnings(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with("genv: warning: "))
        .count()
}

#[test]
fn a_devices_folder_replaced_by_a_link_creates_and_chmods_nothing_outside() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let outside = sb.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let foreign = outside.join("0.lock");
    std::fs::write(&foreign, "").unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o600)).unwrap();
    let _ = std::fs::remove_dir_all(sb.file("devices"));
    std::os::unix::fs::symlink(&outside, sb.file("devices")).unwrap();

    let out = sb
        .cmd(&["lock", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // genv lock fails closed: holders may hold the locks of the folder
    // that was there, so locks in a new one would exclude nobody.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("genv: error: ") && stderr.contains("devices is not a folder"),
        "{stderr}"
    );
    assert_eq!(entries(&outside), ["0.lock"], "nothing created outside");
    assert_eq!(
        mode(&foreign),
        0o600,
        "a foreign file's mode is not widened"
    );
    let devices = std::fs::symlink_metadata(sb.file("devices")).unwrap();
    assert!(devices.is_symlink(), "the link is left, never followed");
}

#[test]
fn a_devices_folder_replaced_by_a_file_is_refused_by_lock() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    let _ = std::fs::remove_dir_all(sb.file("devices"));
    sb.write("devices", "not a folder");
    let out = sb
        .cmd(&["lock", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(sb.read("devices"), "not a folder", "left as it was");
}

#[test]
fn existing_lock_files_keep_their_mode() {
    let sb = one_gpu();
    let _a = env(&sb, "a", None);
    std::fs::create_dir_all(sb.file("devices")).unwrap();
    for name in ["genv.lock", "devices/0.lock", "devices/0.ledger.guard"] {
        std::fs::write(sb.file(name), "").unwrap();
        std::fs::set_permissions(sb.file(name), std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let out = sb
        .cmd(&["lock", "true"])
        .env("GENV_ENVIRONMENT_ID", "a")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    sb.run(&["devices", "detach", "--eid", "a"]).ok();
    for name in ["genv.lock", "devices/0.lock", "devices/0.ledger.guard"] {
        assert_eq!(mode(&sb.file(name)), 0o640, "{name}");
    }
}

#[test]
fn a_link_fifo_or_folder_as_a_state_file_is_moved_aside_and_the_command_works() {
    let victim_dir = tempfile::tempdir().unwrap();
    let victim = victim_dir.path().join("victim");
    type Plant = fn(&Path, &Path);
    let plants: [(&str, Plant); 3] = [
        ("a symbolic link", |at, victim| {
            std::os::unix::fs::symlink(victim, at).unwrap()
        }),
        ("a FIFO", |at, _| {
            let path = std::ffi::CString::new(at.to_str().unwrap()).unwrap();
            // SAFETY: `path` is a valid C string that outlives the call.
            assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o666) }, 0);
        }),
        ("a folder", |at, _| std::fs::create_dir(at).unwrap()),
    ];
    for file in ["envs.json", "devices.json", "genv.lock"] {
        for (what, plant) in plants {
            std::fs::write(&victim, "precious").unwrap();
            std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
            let sb = Sandbox::new();
            let job = Sleeper::new();
            std::fs::create_dir_all(sb.state()).unwrap();
            plant(&sb.file(file), &victim);
            activate(&sb, "a", &job);
            let run = sb
                .run(&["devices", "attach", "--eid", "a", "--count", "1"])
                .ok();
            assert_eq!(run.stdout, "0\n");
            let first = sb.run(&["envs", "ps", "--format", "csv", "--no-header"]);
            assert!(
                first.stdout.starts_with("a,1000,"),
                "{file} {what}: {first:?}"
            );
            assert_eq!(
                beside(&sb, &format!("{file}.corrupt-")).len(),
                1,
                "{file} {what}"
            );
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
            assert_eq!(mode(&victim), 0o600, "{file} {what}");
            assert!(std::fs::symlink_metadata(sb.file(file)).unwrap().is_file());
        }
    }
}

#[test]
fn a_planted_link_gives_one_warning_then_quiet() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sb.file("envs.json")).unwrap();
    let run = sb.run(&["envs", "ps", "--no-header"]).ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.starts_with("genv: warning: ") && run.stderr.contains("symbolic link"),
        "{run:?}"
    );
    assert_eq!(sb.run(&["envs", "ps", "--no-header"]).ok().stderr, "");
}

/// Three environments written by genv, then `envs.json` rewritten in
/// place as genv 1.4.3 does, and cut short: the first environment renamed
/// (complete), the second cut in the middle.
#[test]
fn a_torn_envs_json_is_rebuilt_from_the_last_good_copy() {
    let sb = Sandbox::new();
    let jobs: Vec<Sleeper> = (0..3).map(|_| Sleeper::new()).collect();
    for (eid, job) in ["a", "b", "c"].into_iter().zip(&jobs) {
        activate(&sb, eid, job);
        name(&sb, eid, &format!("old-{eid}"));
    }
    let before = names(&sb);
    assert_eq!(before, "a,old-a\nb,old-b\nc,old-c\n");
    let text = sb.read("envs.json").replace("\"old-a\"", "\"new-a\"");
    let cut = text.find("\"old-b\"").unwrap();
    // In place, on the same inode, as 1.4.3's open(path, "w") does.
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(sb.file("envs.json"))
            .unwrap();
        file.write_all(&text.as_bytes()[..cut]).unwrap();
    }
    let run = sb
        .run(&["envs", "query", "--query", "eid", "config.name"])
        .ok();
    assert_eq!(run.stdout, "a,new-a\nb,old-b\nc,old-c\n", "{run:?}");
    assert_eq!(warnings(&run.stderr), 1, "{run:?}");
    assert!(run.stderr.contains("last good copy"), "{run:?}");
    let aside = beside(&sb, "envs.json.corrupt-");
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), &text[..cut]);
    // Repaired for good: the next command is quiet.
    let again = sb
        .run(&["envs", "query", "--query", "eid", "config.name"])
        .ok();
    assert_eq!(again.stdout, run.stdout);
    assert_eq!(again.stderr, "");
}

/// Rewrites `envs.json` in place, on the same inode, as genv 1.4.3's
/// `open(path, "w")` does, with the first `len` bytes of `text`.
fn rewrite_in_place(sb: &Sandbox, text: &str, len: usize) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(sb.file("envs.json"))
        .unwrap();
    file.write_all(&text.as_bytes()[..len]).unwrap();
}

#[test]
fn the_good_copy_follows_what_genv_1_4_3_wrote_in_place() {
    let sb = Sandbox::new();
    let jobs: Vec<Sleeper> = (0..3).map(|_| Sleeper::new()).collect();
    for (eid, job) in ["a", "b", "c"].into_iter().zip(&jobs) {
        activate(&sb, eid, job);
        name(&sb, eid, &format!("old-{eid}"));
    }
    // 1.4.3 renames b, completely.
    let v2 = sb.read("envs.json").replace("\"old-b\"", "\"middle-b\"");
    rewrite_in_place(&sb, &v2, v2.len());
    assert_eq!(names(&sb), "a,old-a\nb,middle-b\nc,old-c\n");
    // Then it is killed renaming a.
    let v3 = v2.replace("\"old-a\"", "\"new-a\"");
    rewrite_in_place(&sb, &v3, v3.find("\"middle-b\"").unwrap());
    let run = sb
        .run(&["envs", "query", "--query", "eid", "config.name"])
        .ok();
    assert_eq!(run.stdout, "a,new-a\nb,middle-b\nc,old-c\n", "{run:?}");
}

#[test]
fn an_emptied_devices_json_keeps_the_attachments_of_the_last_good_copy() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    activate(&sb, "a", &job);
    sb.run(&["devices", "attach", "--eid", "a", "--index", "1"])
        .ok();
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(sb.file("devices.json"))
        .unwrap();
    let run = sb
        .run(&["devices", "query", "--query", "index", "eids"])
        .ok();
    assert_eq!(run.stdout, "0,\n1,a\n", "{run:?}");
    assert_eq!(warnings(&run.stderr), 1, "{run:?}");
}

#[test]
fn a_planted_good_copy_is_read_as_carefully_as_the_file() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    activate(&sb, "a", &job);
    std::fs::remove_file(sb.file(".envs.json.good")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", sb.file(".envs.json.good")).unwrap();
    sb.write("envs.json", "{\"envs\": [");
    let run = sb.run(&["envs", "query", "--query", "eid"]).ok();
    assert_eq!(run.stdout, "");
    assert_eq!(warnings(&run.stderr), 1, "{run:?}");
    assert!(run.stderr.contains("nothing could be recovered"), "{run:?}");
}

#[test]
fn one_bad_environment_is_set_aside_and_the_others_survive() {
    let sb = Sandbox::new();
    let jobs: Vec<Sleeper> = (0..3).map(|_| Sleeper::new()).collect();
    for (eid, job) in ["a", "b", "c"].into_iter().zip(&jobs) {
        activate(&sb, eid, job);
    }
    let mut doc: serde_json::Value = serde_json::from_str(&sb.read("envs.json")).unwrap();
    doc["envs"][1]["uid"] = serde_json::json!("x");
    sb.write("envs.json", &doc.to_string());
    let run = sb.run(&["envs", "query", "--query", "eid"]).ok();
    assert_eq!(run.stdout, "a\nc\n");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(
        run.stderr.starts_with("genv: warning: 1 entry of "),
        "{run:?}"
    );
    let rejected = beside(&sb, "envs.json.rejected-");
    assert_eq!(rejected.len(), 1);
    assert!(
        run.stderr.contains(rejected[0].to_str().unwrap()),
        "{run:?}"
    );
    let kept: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&rejected[0]).unwrap()).unwrap();
    assert_eq!(kept, serde_json::json!([doc["envs"][1]]));
    assert_eq!(sb.run(&["envs", "query", "--query", "eid"]).ok().stderr, "");
}

#[test]
fn one_bad_attachment_is_set_aside_and_its_device_kept() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    let b = Sleeper::new();
    activate(&sb, "a", &a);
    activate(&sb, "b", &b);
    sb.run(&["devices", "attach", "--eid", "a", "--index", "0"])
        .ok();
    sb.run(&["devices", "attach", "--eid", "b", "--index", "1"])
        .ok();
    let mut doc: serde_json::Value = serde_json::from_str(&sb.read("devices.json")).unwrap();
    doc["devices"][1]["attachments"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"eid": 7, "gpu_memory": null, "time": "x"}));
    sb.write("devices.json", &doc.to_string());
    let run = sb
        .run(&["devices", "query", "--query", "index", "eids"])
        .ok();
    assert_eq!(run.stdout, "0,a\n1,b\n");
    assert_eq!(warnings(&run.stderr), 1, "{run:?}");
    assert_eq!(beside(&sb, "devices.json.rejected-").len(), 1);
}

#[test]
fn a_queue_ticket_of_u64_max_does_not_wrap() {
    let sb = Sandbox::new();
    let a = Sleeper::new();
    let b = Sleeper::new();
    activate(&sb, "a", &a);
    activate(&sb, "b", &b);
    sb.run(&["devices", "attach", "--eid", "a", "--count", "2"])
        .ok();
    sb.write(
        "queue.json",
        &format!(
            r#"{{"waiters": [{{"ticket": {}, "eid": "a", "pid": {}, "since": "01/01/2024 00:00:00",
                "count": 1, "index": null, "over_subscribe": false}}]}}"#,
            u64::MAX,
            a.pid()
        ),
    );
    let run = sb
        .run(&[
            "devices",
            "attach",
            "--eid",
            "b",
            "--count",
            "1",
            "--wait=0.05",
        ])
        .fails();
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    assert!(run.stderr.contains("(1st in line"), "{run:?}");
    assert!(run.stderr.contains("queue.json.rejected-"), "{run:?}");
    assert_eq!(beside(&sb, "queue.json.rejected-").len(), 1);
}

#[test]
fn the_good_copy_is_a_copy_not_a_link() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    activate(&sb, "a", &job);
    let file = std::fs::metadata(sb.file("envs.json")).unwrap();
    let good = std::fs::metadata(sb.file(".envs.json.good")).unwrap();
    assert_ne!(file.ino(), good.ino(), "1.4.3 truncates envs.json in place");
    assert_eq!(sb.read("envs.json"), sb.read(".envs.json.good"));
}

#[test]
fn a_hard_link_to_another_file_is_moved_aside_never_copied() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    let secret = sb.dir.path().join("secret");
    std::fs::write(&secret, "top secret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::hard_link(&secret, sb.file("envs.json")).unwrap();
    let run = sb.run(&["envs", "ps", "--no-header"]).ok();
    assert_eq!(warnings(&run.stderr), 1, "{run:?}");
    assert!(run.stderr.contains("hard link"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "top secret");
    assert_eq!(mode(&secret), 0o600);
    for entry in std::fs::read_dir(sb.state()).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("top secret")) {
            assert_eq!(mode(&path), 0o600, "{path:?} exposes the file");
        }
    }
}

#[test]
fn set_aside_entries_are_readable_by_no_more_users_than_their_file() {
    let sb = Sandbox::new();
    let job = Sleeper::new();
    activate(&sb, "a", &job);
    let mut doc: serde_json::Value = serde_json::from_str(&sb.read("envs.json")).unwrap();
    doc["envs"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"eid": "b", "uid": "x"}));
    sb.write("envs.json", &doc.to_string());
    std::fs::set_permissions(sb.file("envs.json"), std::fs::Permissions::from_mode(0o600)).unwrap();
    sb.run(&["envs", "query", "--query", "eid"]).ok();
    let rejected = beside(&sb, "envs.json.rejected-");
    assert_eq!(mode(&rejected[0]), 0o600);
}

//! A slow driver never holds up the machine: genv asks the GPUs before it
//! takes the global lock, so other users' commands go on meanwhile.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::common::{Run, Sandbox, Sleeper};

/// A fake `nvidia-smi` that says when it is asked, then answers only when
/// the test lets it.
fn slow_nvidia_smi(sb: &Sandbox) -> std::path::PathBuf {
    let bin = sb.dir.path().join("driver");
    std::fs::create_dir_all(&bin).unwrap();
    for fifo in ["asked", "answer"] {
        let path = sb.dir.path().join(fifo);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid C string that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let script = format!(
        "#!/bin/sh\necho asked > '{dir}/asked'\ncat '{dir}/answer' >/dev/null\n\
         echo '0, GPU-00000000-0000-0000-0000-000000000000, 16384, Slow GPU'\n",
        dir = sb.dir.path().display()
    );
    let smi = bin.join("nvidia-smi");
    std::fs::write(&smi, script).unwrap();
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn other_commands_go_on_while_the_driver_is_asked() {
    if std::path::Path::new("/proc/driver/nvidia").exists() {
        panic!("this test simulates the driver; run it on a machine without one");
    }
    let mut sb = Sandbox::new();
    let bin = slow_nvidia_smi(&sb);
    sb.unset("GENV_MOCK_DEVICE_COUNT");
    sb.set("PATH", &format!("{}:/usr/bin:/bin", bin.display()));
    // No devices.json yet: `genv devices` must ask the driver.
    let mut slow = sb
        .cmd(&["devices", "ps", "--format", "csv", "--no-header"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut asked = String::new();
    std::fs::File::open(sb.dir.path().join("asked"))
        .unwrap()
        .read_to_string(&mut asked)
        .unwrap();
    assert_eq!(asked, "asked\n");
    // The driver is busy answering: another user's command still runs
    // (it would wait forever behind a lock held during the query).
    let job = Sleeper::new();
    let pid = job.pid().to_string();
    let mut other = sb
        .cmd(&[
            "envs", "activate", "--eid", "other", "--uid", "1000", "--pid", &pid,
        ])
        .spawn()
        .unwrap();
    let other_pid = other.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(other.wait().map(|s| s.success())));
    let result = finished.recv_timeout(std::time::Duration::from_secs(20));
    if result.is_err() {
        // SAFETY: kill(2) only sends a signal; no memory is involved.
        unsafe { libc::kill(other_pid as i32, libc::SIGKILL) };
        let _ = slow.kill();
        panic!("another user's command waited behind the driver query");
    }
    assert!(matches!(result, Ok(Ok(true))), "{result:?}");
    assert!(sb.read("envs.json").contains("\"other\""));
    std::fs::OpenOptions::new()
        .write(true)
        .open(sb.dir.path().join("answer"))
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    let run = Run::from(slow.wait_with_output().unwrap()).ok();
    assert_eq!(run.stdout, "0,,,\n");
}

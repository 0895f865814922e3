//! The hard memory cap (`libgenv_memcap.so`) over a stand-in CUDA driver:
//! the cap holds however a program reaches the driver, is shared by an
//! environment's processes, comes back from a killed process, and the
//! shell verbs put the library in `LD_PRELOAD` and take it out again.
//! The library needs nothing but the C library, and a ledger it cannot
//! trust or share still leaves every process capped on its own.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use crate::common::users::{ALICE, ROOT, command_as, require_root};
use crate::common::{GENV, Run, Sandbox};

const MODES: [&str; 3] = ["symbol", "dlsym", "proc"];

/// The stand-in driver (`libcuda.so.1`, `libnvidia-ml.so.1`), the client
/// and an empty library, built once per run with `cc`; and the cap library
/// itself, built by cargo next to `genv`.
struct Built {
    dir: PathBuf,
    client: PathBuf,
    library: PathBuf,
    empty: PathBuf,
    next: PathBuf,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "genv-memcap"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p genv-memcap");
        assert!(status.success(), "building genv-memcap failed");
        let library = Path::new(GENV).with_file_name("libgenv_memcap.so");
        assert!(library.is_file(), "{} was not built", library.display());

        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("memcap");
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/memcap");
        let cc = |args: &[&str]| {
            let out = Command::new("cc")
                .args(["-O2", "-Wall"])
                .args(args)
                .output()
                .expect("cc (a C compiler) is needed for the memory cap tests");
            assert!(
                out.status.success(),
                "cc {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let driver = src.join("fake_driver.c");
        let driver = driver.to_str().unwrap();
        let at = |name: &str| dir.join(name).to_str().unwrap().to_owned();
        for soname in ["libcuda.so.1", "libnvidia-ml.so.1"] {
            let link = format!("-Wl,-soname,{soname}");
            cc(&["-fPIC", "-shared", &link, "-o", &at(soname), driver]);
        }
        std::fs::write(dir.join("empty.c"), "int genv_test_empty;\n").unwrap();
        cc(&["-fPIC", "-shared", "-o", &at("empty.so"), &at("empty.c")]);
        let next = src.join("next_getppid.c");
        cc(&[
            "-fPIC",
            "-shared",
            "-o",
            &at("next.so"),
            next.to_str().unwrap(),
            "-ldl",
        ]);
        let rpath = format!("-Wl,-rpath,{}", dir.display());
        let client_src = src.join("client.c");
        cc(&[
            "-o",
            &at("memcap-client"),
            client_src.to_str().unwrap(),
            "-L",
            dir.to_str().unwrap(),
            "-l:libcuda.so.1",
            "-ldl",
            &rpath,
        ]);
        Built {
            client: dir.join("memcap-client"),
            empty: dir.join("empty.so"),
            next: dir.join("next.so"),
            dir,
            library,
        }
    })
}

/// The client as a process of environment `eid` with capacity `cap`.
fn client(sb: &Sandbox, eid: &str, cap: Option<&str>, args: &[&str]) -> Command {
    client_as(sb, ROOT, eid, cap, args)
}

/// The client as a process of user `uid` (see `client`).
fn client_as(sb: &Sandbox, uid: u32, eid: &str, cap: Option<&str>, args: &[&str]) -> Command {
    let b = built();
    std::fs::create_dir_all(sb.state()).unwrap();
    let mut cmd = command_as(uid, &b.client);
    cmd.args(args);
    sb.apply(&mut cmd);
    cmd.env("GENV_ENVIRONMENT_ID", eid)
        .env("LD_PRELOAD", &b.library)
        .env("LD_LIBRARY_PATH", &b.dir);
    match cap {
        Some(cap) => cmd.env("GENV_GPU_MEMORY", cap),
        None => cmd.env_remove("GENV_GPU_MEMORY"),
    };
    cmd
}

fn run(sb: &Sandbox, eid: &str, cap: Option<&str>, args: &[&str]) -> Run {
    let run = Run::from(client(sb, eid, cap, args).output().unwrap()).ok();
    assert!(!run.stderr.contains("memcap-client"), "{run:?}");
    run
}

/// A client that allocated and now holds its memory until killed.
struct Holder(Child);

impl Holder {
    fn start(sb: &Sandbox, eid: &str, cap: &str, args: &[&str]) -> Holder {
        Holder::start_as(sb, ROOT, eid, cap, args).0
    }

    /// A holder of user `uid`, and the lines it printed before holding.
    fn start_as(
        sb: &Sandbox,
        uid: u32,
        eid: &str,
        cap: &str,
        args: &[&str],
    ) -> (Holder, Vec<String>) {
        let mut args = args.to_vec();
        args.push("hold");
        let mut holder = Holder(
            client_as(sb, uid, eid, Some(cap), &args)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = holder.0.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            assert!(!line.contains("error"), "{line}");
            if line == "holding" {
                return (holder, lines);
            }
            lines.push(line);
        }
        panic!("the holder exited early: {lines:?}");
    }

    fn kill9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cap_holds_however_the_driver_is_reached() {
    let sb = Sandbox::new();
    for mode in MODES {
        let eid = format!("cap-{mode}");
        let r = run(
            &sb,
            &eid,
            Some("4g"),
            &[
                mode, "alloc", "3g", "alloc", "2g", "free", "alloc", "4g", "alloc", "1g", "free",
                "managed", "5g", "async", "5g", "pool", "5g", "pitch", "1000", "5000000", "create",
                "5g", "array3d", "1000", "1000", "1001", "create", "4g", "freeall",
            ],
        );
        assert_eq!(
            r.stdout,
            "alloc 3000000000 ok\nalloc 2000000000 error 2\nfree ok\nalloc 4000000000 ok\n\
             alloc 1000000000 error 2\nfree ok\nmanaged 5000000000 error 2\n\
             async 5000000000 error 2\npool 5000000000 error 2\npitch 5000000000 error 2\n\
             create 5001707520 error 2\narray3d 4004000000 error 2\ncreate 4001366016 error 2\n\
             freeall ok\n",
            "{mode}: {r:?}"
        );
        // One line, on the first refusal, naming the environment and its cap.
        assert_eq!(r.stderr.lines().count(), 1, "{mode}: {r:?}");
        assert!(
            r.stderr.starts_with(&format!(
                "genv: error: out of GPU memory: environment {eid} is capped at 4g per GPU (GPU 0: 3000000000 bytes in use, 2000000000 more refused)\n"
            )),
            "{mode}: {r:?}"
        );
    }
}

#[test]
fn queries_report_the_cap() {
    let sb = Sandbox::new();
    for mode in MODES {
        let eid = format!("info-{mode}");
        let r = run(
            &sb,
            &eid,
            Some("4g"),
            &[
                mode, "info", "alloc", "1g", "create", "2mi", "info", "totalmem", "nvml",
            ],
        );
        assert_eq!(
            r.stdout,
            "info free=4000000000 total=4000000000 (0)\nalloc 1000000000 ok\ncreate 2097152 ok\n\
             info free=2997902848 total=4000000000 (0)\ntotalmem 4000000000 (0)\n\
             nvml total=4000000000 free=2997902848 used=1002097152\n",
            "{mode}: {r:?}"
        );
    }
}

#[test]
fn processes_of_an_environment_share_the_cap() {
    let sb = Sandbox::new();
    let first = Holder::start(&sb, "shared", "4g", &["proc", "alloc", "3g"]);
    let r = run(
        &sb,
        "shared",
        Some("4g"),
        &["dlsym", "alloc", "2g", "alloc", "1g", "info"],
    );
    assert_eq!(
        r.stdout,
        "alloc 2000000000 error 2\nalloc 1000000000 ok\ninfo free=0 total=4000000000 (0)\n"
    );
    assert!(r.stderr.contains("GPU 0: 3000000000 bytes in use"), "{r:?}");
    // Another environment has its own cap; another GPU its own share.
    let r = run(&sb, "other", Some("4g"), &["symbol", "alloc", "3g"]);
    assert_eq!(r.stdout, "alloc 3000000000 ok\n");
    let r = run(
        &sb,
        "shared",
        Some("4g"),
        &["symbol", "device", "1", "alloc", "3g"],
    );
    assert_eq!(r.stdout, "device 1\nalloc 3000000000 ok\n");
    drop(first);
}

#[test]
fn racing_processes_never_pass_the_cap_together() {
    let sb = Sandbox::new();
    // Four processes start at once and each asks for 1g three times.
    let mut racers: Vec<Holder> = (0..4)
        .map(|_| {
            let args = ["proc", "alloc", "1g", "alloc", "1g", "alloc", "1g", "hold"];
            Holder(
                client(&sb, "race", Some("4g"), &args)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let mut granted = 0;
    for racer in &mut racers {
        let stdout = racer.0.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line == "holding" {
                break;
            }
            granted += usize::from(line.ends_with(" ok"));
        }
    }
    assert!((1..=4).contains(&granted), "{granted}");
    let r = run(&sb, "race", Some("4g"), &["symbol", "info"]);
    let free = 4_000_000_000 - granted as u64 * 1_000_000_000;
    assert_eq!(r.stdout, format!("info free={free} total=4000000000 (0)\n"));
    for racer in racers {
        racer.kill9();
    }
    let r = run(&sb, "race", Some("4g"), &["symbol", "info"]);
    assert_eq!(r.stdout, "info free=4000000000 total=4000000000 (0)\n");
}

#[test]
fn a_killed_process_gives_its_share_back() {
    let sb = Sandbox::new();
    let holders = [
        Holder::start(&sb, "killed", "4g", &["symbol", "alloc", "2g"]),
        Holder::start(&sb, "killed", "4g", &["proc", "create", "1gi"]),
    ];
    let r = run(
        &sb,
        "killed",
        Some("4g"),
        &["symbol", "alloc", "2g", "info"],
    );
    assert_eq!(
        r.stdout,
        "alloc 2000000000 error 2\ninfo free=926258176 total=4000000000 (0)\n"
    );
    for holder in holders {
        holder.kill9();
    }
    let r = run(&sb, "killed", Some("4g"), &["dlsym", "info", "alloc", "4g"]);
    assert_eq!(
        r.stdout,
        "info free=4000000000 total=4000000000 (0)\nalloc 4000000000 ok\n"
    );
}

#[test]
fn no_capacity_no_limit() {
    let sb = Sandbox::new();
    for mode in MODES {
        let r = run(&sb, "free", None, &[mode, "alloc", "50g", "info", "nvml"]);
        assert_eq!(
            r.stdout,
            "alloc 50000000000 ok\ninfo free=35520809984 total=85520809984 (0)\n\
             nvml total=85520809984 free=85520809984 used=0\n",
            "{mode}"
        );
        assert_eq!(r.stderr, "");
    }
}

#[test]
fn a_planted_link_is_not_followed() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    let target = sb.dir.path().join("victim");
    std::fs::write(&target, "keep").unwrap();
    let uid = rustix::process::geteuid().as_raw();
    std::os::unix::fs::symlink(&target, sb.state().join(format!("memcap-{uid}-linked"))).unwrap();
    let r = run(
        &sb,
        "linked",
        Some("4g"),
        &["symbol", "alloc", "3g", "alloc", "2g"],
    );
    // The process still caps itself, and says the ledger was not shared.
    assert_eq!(r.stdout, "alloc 3000000000 ok\nalloc 2000000000 error 2\n");
    assert!(r.stderr.contains("counted for this process alone"), "{r:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
}

/// A file of alice's own, linked by her as her environment's ledger (with
/// `fs.protected_hardlinks`, only whoever may read and write a file can
/// link it; without it, anyone): the library does not share it, never
/// writes to it, and the process still caps itself.
#[test]
fn a_ledger_with_two_links_is_not_used() {
    let sb = Sandbox::multi_user();
    let victim = sb.home_of(ALICE).join("victim");
    let ledger = sb.state().join(format!("memcap-{ALICE}-linked"));
    let made = command_as(ALICE, "sh")
        .args(["-c", "umask 077 && : >\"$1\" && ln \"$1\" \"$2\"", "sh"])
        .arg(&victim)
        .arg(&ledger)
        .status()
        .unwrap();
    assert!(made.success());
    let links =
        |path: &Path| std::os::unix::fs::MetadataExt::nlink(&std::fs::metadata(path).unwrap());
    assert_eq!(links(&ledger), 2);

    let output = client_as(
        &sb,
        ALICE,
        "linked",
        Some("4g"),
        &["symbol", "alloc", "3g", "alloc", "2g", "info"],
    )
    .output()
    .unwrap();
    let r = Run::from(output).ok();
    assert_eq!(
        r.stdout,
        "alloc 3000000000 ok\nalloc 2000000000 error 2\ninfo free=1000000000 total=4000000000 (0)\n"
    );
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr.contains(
            "counted for this process alone (the state folder's ledger could not be used)"
        ),
        "{r:?}"
    );
    // Not a byte written, and both names still the one file.
    assert_eq!(std::fs::metadata(&victim).unwrap().len(), 0);
    assert_eq!(links(&victim), 2);
}

/// Every slot of alice's ledger held by a live process of her
/// environment: one more process is still capped, on its own, and says so
/// once.
#[test]
fn every_slot_taken_still_caps_the_process() {
    let sb = Sandbox::multi_user();
    // The client's 512 children each hold a byte: each takes a slot.
    let (filler, lines) =
        Holder::start_as(&sb, ALICE, "full", "4g", &["symbol", "spawn", "512", "1"]);
    assert_eq!(lines, ["spawn 512 1 held 512"]);

    let output = client_as(
        &sb,
        ALICE,
        "full",
        Some("4g"),
        &[
            "symbol", "alloc", "3g", "alloc", "2g", "alloc", "1g", "free", "alloc", "2g",
        ],
    )
    .output()
    .unwrap();
    let r = Run::from(output).ok();
    assert_eq!(
        r.stdout,
        "alloc 3000000000 ok\nalloc 2000000000 error 2\nalloc 1000000000 error 2\nfree ok\n\
         alloc 2000000000 ok\n"
    );
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{r:?}");
    assert_eq!(
        lines[0],
        "genv: warning: every slot of environment full's GPU memory ledger is held by a live process; \
         this process is capped at 4g per GPU on its own, and the environment's other processes do \
         not count what it holds",
        "{r:?}"
    );
    assert_eq!(
        lines[1],
        "genv: error: out of GPU memory: environment full is capped at 4g per GPU (GPU 0: \
         3000000512 bytes in use, 2000000000 more refused); counted for this process alone \
         (every slot of the ledger is taken)",
        "{r:?}"
    );
    drop(filler);
}

/// Read with `readelf` (binutils, which `cc` needs and scripts/test
/// installs with it): the shared libraries an object names in its
/// dynamic section.
fn needed(object: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", "--wide"])
        .arg(object)
        .output()
        .expect("readelf (binutils) is needed for the memory cap tests");
    assert!(
        out.status.success(),
        "readelf {}: {out:?}",
        object.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_owned()))
        .collect()
}

/// glibc's own files, which every glibc image has (libdl and libpthread
/// apart from libc before 2.34).
fn in_glibc(name: &str) -> bool {
    ["libc.so.6", "libdl.so.2", "libpthread.so.0"].contains(&name) || name.starts_with("ld-linux")
}

/// The glibc versions an object's symbols need (`GLIBC_2.34` as
/// `(2, 34)`), read with `readelf`.
fn glibc_versions(object: &Path) -> Vec<(u32, u32)> {
    let out = Command::new("readelf")
        .args(["-V", "--wide"])
        .arg(object)
        .output()
        .expect("readelf (binutils) is needed for the memory cap tests");
    assert!(
        out.status.success(),
        "readelf {}: {out:?}",
        object.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| {
            let (major, rest) = word.strip_prefix("GLIBC_")?.split_once('.')?;
            let minor = rest.split('.').next()?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

#[test]
fn the_library_needs_nothing_but_the_c_library() {
    let library = &built().library;
    let needed = needed(library);
    assert!(needed.iter().any(|n| n == "libc.so.6"), "{needed:?}");
    let others: Vec<&String> = needed.iter().filter(|n| !in_glibc(n)).collect();
    assert!(others.is_empty(), "libgenv_memcap.so needs {others:?}");
    // And no glibc newer than RHEL 9's (2.34): the unwinder linked in
    // must not bring its `_dl_find_object` (2.35).
    let versions = glibc_versions(library);
    assert!(!versions.is_empty(), "no glibc versions read");
    let newest = versions.iter().max().unwrap();
    assert!(
        *newest <= (2, 34),
        "libgenv_memcap.so needs glibc {newest:?}"
    );
}

/// A root as bare as distroless/base: the dynamic loader and glibc, the
/// client, the stand-in driver and the library, nothing else (no
/// `libgcc_s.so.1`). Preloaded there, the library still caps.
#[test]
fn the_cap_holds_in_a_root_with_only_glibc() {
    require_root();
    let b = built();
    let sb = Sandbox::new();
    let root = sb.dir.path().join("root");
    let ours = root.join("t");
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(root.join("state")).unwrap();
    let library = b.library.file_name().unwrap();
    for (from, name) in [
        (b.client.clone(), "memcap-client".as_ref()),
        (b.dir.join("libcuda.so.1"), "libcuda.so.1".as_ref()),
        (b.library.clone(), library),
    ] {
        std::fs::copy(from, ours.join(name)).unwrap();
    }
    // glibc's files, where the client's loader found them.
    let ldd = Command::new("ldd").arg(&b.client).output().expect("ldd");
    let ldd = String::from_utf8_lossy(&ldd.stdout).into_owned();
    let mut loader = None;
    for line in ldd.lines().map(str::trim) {
        let path = match line.split_once(" => ") {
            Some((name, path)) if in_glibc(name) => path,
            Some(_) => continue,
            None => line,
        };
        let path = Path::new(path.split(" (").next().unwrap());
        let name = path.file_name().unwrap().to_str().unwrap();
        if !path.is_absolute() || !in_glibc(name) {
            continue;
        }
        if name.starts_with("ld-linux") {
            let at = root.join(path.strip_prefix("/").unwrap());
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::copy(path, at).unwrap();
            loader = Some(path.to_owned());
        } else {
            std::fs::copy(path, ours.join(name)).unwrap();
        }
    }
    assert!(loader.is_some(), "no dynamic loader in `ldd` output: {ldd}");
    assert!(ours.join("libc.so.6").is_file(), "{ldd}");

    let preload = Path::new("/t").join(library);
    let root = std::ffi::CString::new(root.as_os_str().as_encoded_bytes()).unwrap();
    let mut cmd = Command::new("/t/memcap-client");
    cmd.args(["symbol", "alloc", "3g", "alloc", "2g"])
        .env_clear()
        .env("LD_PRELOAD", preload)
        .env("LD_LIBRARY_PATH", "/t")
        .env("GENV_TMPDIR", "/state")
        .env("GENV_ENVIRONMENT_ID", "bare")
        .env("GENV_GPU_MEMORY", "4g")
        .stdin(Stdio::null());
    // SAFETY: two system calls between fork and exec, on a path made
    // before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            rustix::process::chroot(root.as_c_str())?;
            Ok(rustix::process::chdir(c"/")?)
        });
    }
    let out = cmd.output().expect("the client in its root");
    let r = Run::from(out).ok();
    assert_eq!(
        r.stdout, "alloc 3000000000 ok\nalloc 2000000000 error 2\n",
        "{r:?}"
    );
    // The library's one line, and nothing from the loader.
    assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
    assert!(
        r.stderr
            .starts_with("genv: error: out of GPU memory: environment bare is capped at 4g"),
        "{r:?}"
    );
}

#[test]
fn rtld_next_still_finds_the_next_definition() {
    // Our `dlsym` is in every process of a capped environment: another
    // preloaded wrapper's dlsym(RTLD_NEXT, …) must look past that wrapper,
    // not past us (which would find the wrapper itself).
    let b = built();
    let preload = format!("{}:{}", b.library.display(), b.next.display());
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", "echo \"ppid=$PPID\""])
        .env("LD_PRELOAD", preload)
        .env("GENV_GPU_MEMORY", "4g")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, format!("ppid={}\n", std::process::id()), "{out:?}");
}

/// What `LD_PRELOAD` holds (or `<unset>`), in the shell's own words.
fn show_preload(shell: &str) -> &'static str {
    match shell {
        "fish" => {
            "if set -q LD_PRELOAD; echo \"preload=$LD_PRELOAD\"; else; echo preload=unset; end\n"
        }
        _ => {
            "if [ -n \"${LD_PRELOAD+x}\" ]; then echo \"preload=$LD_PRELOAD\"; else echo preload=unset; fi\n"
        }
    }
}

#[test]
fn shell_verbs_put_the_library_in_ld_preload_and_back() {
    let b = built();
    let library = b.library.to_str().unwrap();
    let empty = b.empty.to_str().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        for before in [None, Some(empty)] {
            let sb = Sandbox::new();
            let init = match shell {
                "fish" => "genv shell --init fish | source".to_owned(),
                _ => format!("eval \"$(genv shell --init {shell})\""),
            };
            let show = show_preload(shell);
            let script = format!(
                "{init}\n{show}genv activate --gpus 1 --gpu-memory 4g\n{show}genv status\n\
                 genv config gpu-memory --clear\n{show}genv config gpu-memory 2g\n{show}\
                 genv deactivate\n{show}genv activate --gpus 1\n{show}genv deactivate\n{show}"
            );
            let mut cmd = Command::new(shell);
            match shell {
                "bash" => cmd.args(["--norc", "--noprofile", "-c", &script]),
                "zsh" => cmd.args(["-f", "-c", &script]),
                _ => cmd.args(["--no-config", "-c", &script]),
            };
            sb.apply(&mut cmd);
            let bin = Path::new(GENV).parent().unwrap();
            cmd.env(
                "PATH",
                format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
            )
            .env("HOME", sb.dir.path())
            .env_remove("XDG_CACHE_HOME");
            match before {
                Some(value) => cmd.env("LD_PRELOAD", value),
                None => cmd.env_remove("LD_PRELOAD"),
            };
            let r = Run::from(cmd.output().unwrap_or_else(|e| panic!("{shell}: {e}")));
            let lines: Vec<&str> = r
                .stdout
                .lines()
                .filter(|l| l.starts_with("preload="))
                .collect();
            let before = before.map_or("preload=unset".to_owned(), |v| format!("preload={v}"));
            let with = match b.empty.to_str().filter(|_| before != "preload=unset") {
                Some(empty) => format!("preload={library}:{empty}"),
                None => format!("preload={library}"),
            };
            assert_eq!(
                lines,
                [&before, &with, &before, &with, &before, &before, &before],
                "{shell}: {r:?}"
            );
            assert!(
                r.stdout.contains(&format!(
                    "GPU memory cap\n    enforced (LD_PRELOAD holds {library})\n"
                )),
                "{shell}: {r:?}"
            );
        }
    }
}

#[test]
fn status_says_when_the_cap_is_not_enforced() {
    let mut sb = Sandbox::new();
    let r = sb
        .run(&[
            "envs",
            "activate",
            "--eid",
            "nocap",
            "--uid",
            "1000",
            "--pid",
            &std::process::id().to_string(),
        ])
        .ok();
    drop(r);
    sb.run(&[
        "envs",
        "config",
        "--eid",
        "nocap",
        "gpu-memory",
        "--gpu-memory",
        "4g",
    ])
    .ok();
    sb.set("GENV_ENVIRONMENT_ID", "nocap");
    let status = sb.run(&["status"]).ok().stdout;
    assert!(
        status.ends_with(
            "GPU memory cap\n    not enforced in this shell: LD_PRELOAD does not hold libgenv_memcap.so; enforcement (genv enforce) is the backstop\n\n"
        ),
        "{status}"
    );
}

/// What the cap counts shows where a user looks: `genv status`, the
/// devices' JSON, and the `nvidia-smi` shim when the driver cannot list the
/// environment's processes (a container without the host's pid namespace).
#[test]
fn what_the_cap_counts_is_shown() {
    let bed = crate::shim_support::ShimBed::new();
    let sb = &bed.sandbox;
    let uid = Command::new("id").arg("-u").output().unwrap();
    let uid: u32 = String::from_utf8(uid.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    sb.activate_env_as("acct", uid, None, std::process::id())
        .ok();
    sb.config_memory("acct", "4g").ok();
    sb.attach_index("acct", 1).ok();
    let status = |sb: &Sandbox| {
        let mut cmd = sb.cmd(&["status"]);
        cmd.env("GENV_ENVIRONMENT_ID", "acct");
        Run::from(cmd.output().unwrap()).ok().stdout
    };
    let in_use = |sb: &Sandbox| {
        let json = sb.run(&["devices", "ps", "--format", "json"]).ok().stdout;
        let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
        doc["devices"][1]["attachments"][0]["memory_in_use"].clone()
    };
    // No process of the environment has run under the library yet.
    assert!(!status(sb).contains("allocated"), "{}", status(sb));
    assert_eq!(in_use(sb), serde_json::Value::Null);

    let mut cmd = client(sb, "acct", Some("4g"), &["proc", "alloc", "3g", "hold"]);
    cmd.env("CUDA_VISIBLE_DEVICES", "1").stdout(Stdio::piped());
    let mut holder = Holder(cmd.spawn().unwrap());
    let stdout = holder.0.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .take_while(|l| l != "holding")
        .collect();
    assert_eq!(lines, ["alloc 3000000000 ok"]);

    assert!(
        status(sb).contains(
            "GPU memory cap\n    not enforced in this shell: LD_PRELOAD does not hold libgenv_memcap.so; enforcement (genv enforce) is the backstop\n    GPU 1: 2861MiB allocated by the environment's processes\n\n"
        ),
        "{}",
        status(sb)
    );
    assert_eq!(in_use(sb), serde_json::json!(3_000_000_000u64));

    // The driver lists no processes: the shim shows the ledger's count
    // (GPU 1's row; GPU 0 is not the environment's) instead of N/A.
    let table: String = std::fs::read_to_string(crate::common::fixture("nvidia-smi/470-v100.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("MiB |") || l.contains("MiB /"))
        .map(|l| format!("{l}\n"))
        .collect();
    bed.fake("nvidia-smi", &table);
    let vars = [
        ("GENV_ENVIRONMENT_ID", "acct"),
        ("CUDA_VISIBLE_DEVICES", "1"),
        ("GENV_GPU_MEMORY", "4g"),
    ];
    let out = bed.run("nvidia-smi", &[], &vars).ok().stdout;
    assert!(out.contains("   2861MiB /  3814MiB |"), "{out}");
    assert!(!out.contains("Missing information"), "{out}");

    // Its process gone (even by kill -9), nothing is counted.
    holder.kill9();
    assert_eq!(in_use(sb), serde_json::json!(0));
    assert!(
        status(sb).contains("    GPU 1: 0MiB allocated"),
        "{}",
        status(sb)
    );
}

/// The statically linked genv (`scripts/build-static`, the build that
/// starts fastest) loads NVML with `dlopen` as the dynamically linked one
/// does: both read the stand-in NVML's two GPUs, and both say there is no
/// driver when it is absent.
#[test]
fn the_static_genv_reads_the_gpus_through_nvml() {
    let b = built();
    let static_genv = Path::new(GENV).with_file_name("genv-static");
    assert!(
        static_genv.is_file(),
        "{} is missing: scripts/test builds it (scripts/build-static)",
        static_genv.display()
    );
    for genv in [Path::new(GENV), static_genv.as_path()] {
        let mut sb = Sandbox::new();
        sb.unset("GENV_MOCK_DEVICE_COUNT")
            .set("PATH", "/usr/bin:/bin")
            .set("LD_LIBRARY_PATH", b.dir.to_str().unwrap());
        let ask = |sb: &Sandbox| {
            let mut cmd = Command::new(genv);
            cmd.args(["devices", "ps", "--format", "json"]);
            sb.apply(&mut cmd);
            Run::from(cmd.output().unwrap())
        };
        let run = ask(&sb).ok();
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let totals: Vec<&str> = doc["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["total_memory"].as_str().unwrap())
            .collect();
        assert_eq!(
            totals,
            ["81559mi", "81559mi"],
            "{}: {run:?}",
            genv.display()
        );

        let mut sb = Sandbox::new();
        sb.unset("GENV_MOCK_DEVICE_COUNT")
            .set("PATH", "/usr/bin:/bin");
        let run = ask(&sb).fails();
        assert!(
            run.stderr.contains("no NVIDIA driver found"),
            "{}: {run:?}",
            genv.display()
        );
    }
}

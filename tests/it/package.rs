//! The Debian package (scripts/build-deb, from the suite's static genv):
//! what it holds, genv run from a scratch root it was installed into, its
//! man pages rendered, its completions loaded by real shells, and the
//! daemon's systemd units.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::{GENV, Run, Sandbox};

/// The package, built once for the module, and a root it is installed into.
struct Package {
    deb: PathBuf,
    root: PathBuf,
}

fn package() -> &'static Package {
    static PACKAGE: OnceLock<Package> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let static_genv = Path::new(GENV).with_file_name("genv-static");
        assert!(
            static_genv.is_file(),
            "{} is missing: scripts/test builds it (scripts/build-static)",
            static_genv.display()
        );
        let built = Run::from(
            Command::new(repo.join("scripts/build-deb"))
                .current_dir(repo)
                .output()
                .expect("scripts/build-deb"),
        )
        .ok();
        let deb = repo.join(built.stdout.trim());
        assert!(deb.is_file(), "{built:?}");
        // Installed with dpkg into a root of its own, its postinst run
        // (outside a chroot, on that root) and libc6 taken as given.
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package-root");
        let _ = std::fs::remove_dir_all(&root);
        let dpkg = root.join("var/lib/dpkg");
        std::fs::create_dir_all(dpkg.join("updates")).unwrap();
        std::fs::create_dir_all(dpkg.join("info")).unwrap();
        std::fs::write(dpkg.join("status"), "").unwrap();
        let installed = Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
                "--install",
            ])
            .arg(&deb)
            .output()
            .expect("dpkg");
        Run::from(installed).ok();
        Package { deb, root }
    })
}

fn dpkg_deb(args: &[&str]) -> String {
    let output = Command::new("dpkg-deb")
        .args(args)
        .arg(&package().deb)
        .output()
        .expect("dpkg-deb");
    Run::from(output).ok().stdout
}

/// `dpkg-deb -c`: each entry's mode, owner and path (with its link
/// target), the size and date left out.
fn contents() -> Vec<String> {
    dpkg_deb(&["-c"])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            format!("{} {} {}", fields[0], fields[1], fields[5..].join(" "))
        })
        .collect()
}

#[test]
fn the_package_holds_genv_its_links_library_man_pages_and_completions() {
    let contents = contents();
    let has = |entry: &str| {
        assert!(
            contents.iter().any(|line| line == entry),
            "{entry} is not in the package:\n{}",
            contents.join("\n")
        );
    };
    has("-rwxr-xr-x root/root ./usr/lib/genv/genv");
    has("-rw-r--r-- root/root ./usr/lib/genv/libgenv_memcap.so");
    for program in [
        "genv",
        "genv-docker",
        "genv-container-runtime",
        "genv-container-runtime-hook",
    ] {
        has(&format!(
            "lrwxrwxrwx root/root ./usr/bin/{program} -> ../lib/genv/genv"
        ));
    }
    for page in ["genv", "genv-activate", "genv-devices-attach", "genv-shell"] {
        has(&format!(
            "-rw-r--r-- root/root ./usr/share/man/man1/{page}.1.gz"
        ));
    }
    has("-rw-r--r-- root/root ./usr/share/bash-completion/completions/genv");
    has("-rw-r--r-- root/root ./usr/share/zsh/vendor-completions/_genv");
    has("-rw-r--r-- root/root ./usr/share/fish/vendor_completions.d/genv.fish");
    has("-rw-r--r-- root/root ./usr/lib/tmpfiles.d/genv.conf");
    has("-rw-r--r-- root/root ./usr/share/doc/genv/copyright");
    has("-rw-r--r-- root/root ./usr/share/doc/genv/DAEMON.md");
    has("-rw-r--r-- root/root ./lib/systemd/system/genv-daemon.service");
    has("-rw-r--r-- root/root ./lib/systemd/system/genv-daemon.socket");
    // Nothing else runs: the one program is genv, and no hidden verb
    // (`genv sdk`) has a page.
    let programs: Vec<&String> = contents
        .iter()
        .filter(|line| line.starts_with("-rwx"))
        .collect();
    assert_eq!(programs.len(), 1, "{programs:?}");
    assert!(
        !contents.iter().any(|line| line.contains("genv-sdk")),
        "{contents:?}"
    );

    let control = dpkg_deb(&["-f"]);
    assert!(control.contains("Package: genv\n"), "{control}");
    assert!(control.contains("\nDepends: libc6 (>= 2."), "{control}");
    let arch = Run::from(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .unwrap(),
    )
    .ok()
    .stdout;
    assert!(
        control.contains(&format!("\nArchitecture: {arch}")),
        "{control}"
    );
}

/// genv from the installed root: its version, and an activation in bash
/// that finds the memory cap library next to it through the `genv` link.
#[test]
fn genv_runs_from_the_installed_package() {
    let root = &package().root;
    let bin = root.join("usr/bin");
    let sb = Sandbox::new();
    let mut version = Command::new(bin.join("genv"));
    version.arg("version");
    sb.apply(&mut version);
    assert_eq!(Run::from(version.output().unwrap()).ok().stdout, "1.4.3\n");

    let script = r#"
        set -eu
        eval "$(genv shell --init bash)"
        genv activate --name packaged --gpus 1
        printf '%s\n' "$GENV_ENVIRONMENT_NAME" "$CUDA_VISIBLE_DEVICES"
        genv config gpu-memory 1g
        printf '%s\n' "${LD_PRELOAD:-}"
        genv deactivate
        printf '%s\n' "${LD_PRELOAD:-<unset>}"
    "#;
    let mut bash = Command::new("bash");
    bash.args(["--norc", "--noprofile", "-c", script]);
    sb.apply(&mut bash);
    let path = format!("{}:/usr/bin:/bin", bin.display());
    // The shims folder's links name the genv that made them: this one's
    // are its own, not the other tests'.
    let cache = sb.dir.path().join("cache");
    bash.env("PATH", path)
        .env("XDG_CACHE_HOME", &cache)
        .env_remove("LD_PRELOAD");
    let run = Run::from(bash.output().unwrap()).ok();
    // genv finds the library beside the program the link resolves to.
    let library = std::fs::canonicalize(root.join("usr/lib/genv/libgenv_memcap.so")).unwrap();
    assert_eq!(
        run.stdout,
        format!("packaged\n0\n{}\n<unset>\n", library.display()),
        "{run:?}"
    );
    // The environment ended with the shell.
    assert_eq!(sb.run(&["envs", "query", "--query", "eid"]).ok().stdout, "");
}

/// Each man page renders with the verb's options.
#[test]
fn the_man_pages_render_with_each_verbs_options() {
    let man = package().root.join("usr/share/man/man1");
    for (page, options) in [
        ("genv", &["genv-activate(1)", "genv-devices(1)"][..]),
        (
            "genv-activate",
            &["--gpus", "--over-subscribe", "--wait"][..],
        ),
        ("genv-devices-attach", &["--count", "--index"][..]),
    ] {
        let gz = man.join(format!("{page}.1.gz"));
        let rendered = Command::new("sh")
            .args(["-c", "gzip -dc \"$1\" | groff -man -Tascii -P-cbou", "sh"])
            .arg(&gz)
            .output()
            .expect("groff (groff-base) renders the man pages");
        let rendered = Run::from(rendered).ok();
        assert!(rendered.stderr.is_empty(), "{page}: {rendered:?}");
        assert!(
            rendered.stdout.starts_with(&format!("{page}(1)")),
            "{page}: {}",
            rendered.stdout
        );
        for option in options {
            assert!(
                rendered.stdout.contains(option),
                "{page} lacks {option}:\n{}",
                rendered.stdout
            );
        }
    }
}

/// The packaged completions are `genv shell --completions`, and real bash
/// and fish offer `activate` for `genv act<TAB>`.
#[test]
fn the_completions_offer_the_verbs() {
    let share = package().root.join("usr/share");
    let bash = share.join("bash-completion/completions/genv");
    for (shell, file) in [
        ("bash", bash.clone()),
        ("zsh", share.join("zsh/vendor-completions/_genv")),
        ("fish", share.join("fish/vendor_completions.d/genv.fish")),
    ] {
        let sb = Sandbox::new();
        let printed = sb.run(&["shell", "--completions", shell]).ok().stdout;
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            printed,
            "{}",
            file.display()
        );
    }

    let script = r#"
        set -eu
        source "$1"
        complete -p genv
        COMP_WORDS=(genv act)
        COMP_CWORD=1
        COMP_LINE='genv act'
        COMP_POINT=${#COMP_LINE}
        "$(complete -p genv | sed -n 's/.* -F \([^ ]*\) .*/\1/p')" genv act genv
        printf 'reply: %s\n' "${COMPREPLY[@]}"
    "#;
    let run = Run::from(
        Command::new("bash")
            .args(["--norc", "--noprofile", "-c", script, "bash"])
            .arg(&bash)
            .output()
            .unwrap(),
    )
    .ok();
    assert!(run.stdout.contains(" genv\n"), "{run:?}");
    assert!(run.stdout.ends_with("reply: activate\n"), "{run:?}");

    let fish = share.join("fish/vendor_completions.d/genv.fish");
    let run = Run::from(
        Command::new("fish")
            .args([
                "--no-config",
                "-c",
                "source $argv[1]; complete -C 'genv act'",
            ])
            .arg(&fish)
            .output()
            .expect("fish"),
    )
    .ok();
    assert!(run.stdout.starts_with("activate\t"), "{run:?}");
}

/// Installing made the state folder (the postinst, through the package's
/// tmpfiles.d entry): root's, 0777 without the sticky bit, a folder genv
/// works in.
#[test]
fn installing_makes_a_state_folder_genv_accepts() {
    let root = &package().root;
    let state = root.join("var/tmp/genv");
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o777);
    assert_eq!(meta.uid(), 0);

    let mut sb = Sandbox::new();
    sb.set("GENV_TMPDIR", state.to_str().unwrap());
    let mut devices = Command::new(root.join("usr/bin/genv"));
    devices.args(["devices", "ps", "--format", "csv"]);
    sb.apply(&mut devices);
    let run = Run::from(devices.output().unwrap()).ok();
    assert_eq!(
        run.stdout, "ID,ENV ID,ENV NAME,ATTACHED\n0,,,\n1,,,\n",
        "{run:?}"
    );
    assert_eq!(run.stderr, "", "{run:?}");
}

/// The value of `key` in a unit file, the first time it is set.
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

/// The daemon's units, installed but not enabled: the service runs the
/// packaged genv, the socket is the state folder's that the package
/// makes, and systemd accepts both.
#[test]
fn the_daemon_units_run_the_packaged_genv_and_are_not_enabled() {
    let root = &package().root;
    let units = root.join("lib/systemd/system");
    let read = |name: &str| std::fs::read_to_string(units.join(name)).unwrap();
    let service = read("genv-daemon.service");
    let socket = read("genv-daemon.socket");

    let start: Vec<&str> = unit_value(&service, "ExecStart").split(' ').collect();
    assert_eq!(start[1..], ["daemon"], "{service}");
    let program = start[0].strip_prefix('/').unwrap();
    assert!(
        contents()
            .iter()
            .any(|line| *line == format!("lrwxrwxrwx root/root ./{program} -> ../lib/genv/genv")),
        "{program} is not the packaged genv"
    );
    assert_eq!(
        unit_value(&service, "Environment"),
        "GENV_TMPDIR=/var/tmp/genv"
    );
    assert_eq!(unit_value(&service, "ReadWritePaths"), "/var/tmp/genv");
    assert_eq!(unit_value(&service, "Requires"), "genv-daemon.socket");

    let tmpfiles = std::fs::read_to_string(root.join("usr/lib/tmpfiles.d/genv.conf")).unwrap();
    assert!(tmpfiles.contains("\nd /var/tmp/genv "), "{tmpfiles}");
    assert_eq!(
        unit_value(&socket, "ListenStream"),
        "/var/tmp/genv/genv.sock"
    );
    assert_eq!(unit_value(&socket, "SocketMode"), "0666");
    assert_eq!(unit_value(&socket, "SocketUser"), "root");
    assert_eq!(unit_value(&socket, "DirectoryMode"), "0755");
    assert_eq!(unit_value(&socket, "RemoveOnStop"), "yes");

    // Installing enabled nothing: locked-down is the administrator's choice.
    assert!(!root.join("etc/systemd").exists());

    // systemd's own reading of the units: copies beside each other, the
    // service running the installed root's genv.
    let copies = tempfile::tempdir().unwrap();
    std::fs::write(copies.path().join("genv-daemon.socket"), &socket).unwrap();
    let service = service.replace(
        "ExecStart=/usr/bin/genv ",
        &format!("ExecStart={} ", root.join(program).display()),
    );
    std::fs::write(copies.path().join("genv-daemon.service"), service).unwrap();
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(copies.path().join("genv-daemon.socket"))
        .arg(copies.path().join("genv-daemon.service"))
        .output()
        .expect("systemd-analyze (systemd)");
    let verify = Run::from(verify).ok();
    assert_eq!(verify.stderr, "", "{verify:?}");
}

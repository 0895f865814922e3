//! `genv llm serve | ps | attach` with a stand-in `ollama`
//! (tests/fixtures/ollama/ollama): the environment, the port, the GPUs the
//! server sees, `ps`, attaching, and Ctrl-C freeing everything.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};

use crate::common::{Run, Sandbox, fixture};

fn llm_sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    let ollama = fixture("ollama");
    sb.set("PATH", &format!("{}:/usr/bin:/bin", ollama.display()));
    let log = sb.dir.path().join("ollama.log");
    sb.set("OLLAMA_STANDIN_LOG", log.to_str().unwrap());
    sb
}

fn calls(sb: &Sandbox) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sb.dir.path().join("ollama.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `genv llm serve ARGS`, once genv said where it serves and the stand-in
/// that it listens: the server process and its port.
fn serve(sb: &Sandbox, args: &[&str]) -> (Child, u16) {
    let mut all = vec!["llm", "serve"];
    all.extend_from_slice(args);
    let mut child = sb
        .cmd(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert!(said.starts_with("genv: serving "), "{said}");
    let mut listening = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut listening)
        .unwrap();
    let port = listening
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{listening}"));
    (child, port)
}

fn interrupt(child: &Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
}

#[test]
fn serve_ps_attach_and_ctrl_c() {
    let sb = llm_sandbox();
    let (mut server, port) = serve(&sb, &["llama3", "--gpus", "1", "--gpu-memory", "4g"]);
    let eid = server.id().to_string();

    // The environment, named for the model and port, holds a GPU.
    let envs = sb
        .run(&[
            "envs",
            "query",
            "--query",
            "eid",
            "config.name",
            "config.gpu_memory",
        ])
        .ok();
    assert_eq!(envs.stdout, format!("{eid},llm/llama3/{port},4g\n"));
    assert_eq!(
        sb.run(&["devices", "find", "--eid", &eid]).ok().stdout,
        "0\n"
    );
    // Ollama ran in it, on that port, seeing that GPU.
    let first = &calls(&sb)[0];
    assert_eq!(first["args"], serde_json::json!(["serve"]));
    assert_eq!(first["env"]["OLLAMA_HOST"], format!("127.0.0.1:{port}"));
    assert_eq!(first["env"]["CUDA_VISIBLE_DEVICES"], "0");
    assert_eq!(first["env"]["GENV_ENVIRONMENT_ID"], eid);
    assert_eq!(first["env"]["GENV_GPU_MEMORY"], "4g");

    // ps: well-formed CSV, six fields.
    let ps = sb
        .run(&["llm", "ps", "--format", "csv", "--no-header", "--timestamp"])
        .ok();
    let fields: Vec<&str> = ps.stdout.trim_end().split(',').collect();
    assert_eq!(fields.len(), 6, "{ps:?}");
    assert_eq!(&fields[..2], ["llama3", &port.to_string()]);
    assert_eq!(fields[3], eid);
    let pids: Vec<&str> = fields[5].split(' ').collect();
    assert_eq!(pids.len(), 2, "genv and ollama: {ps:?}");
    let tui = sb.run(&["llms", "ps"]).ok();
    assert!(
        tui.stdout.starts_with("MODEL       PORT    CREATED"),
        "{tui:?}"
    );
    // `genv llm` alone lists the served models, as genv 1.4.3 does.
    assert_eq!(sb.run(&["llm"]).ok().stdout, tui.stdout);

    // attach: `ollama run` against the served port.
    let attached = sb.run(&["llm", "attach", "llama3"]).ok();
    assert_eq!(attached.stdout, "llama3: Ollama is running\n");
    let run = calls(&sb)
        .into_iter()
        .find(|c| c["args"][0] == "run")
        .unwrap();
    assert_eq!(run["env"]["OLLAMA_HOST"], format!("localhost:{port}"));

    // Ctrl-C: Ollama stops, the GPU and the environment are freed.
    interrupt(&server);
    let status = server.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        calls(&sb).iter().any(|c| c["signal"] == 2),
        "SIGINT reached ollama"
    );
    assert_eq!(sb.run(&["llm", "ps", "--no-header"]).ok().stdout, "");
    assert_eq!(
        sb.run(&["devices", "ps", "--format", "csv", "--no-header"])
            .ok()
            .stdout,
        "0,,,\n1,,,\n"
    );
}

#[test]
fn a_model_served_twice_attaches_to_the_one_with_fewer_clients() {
    let sb = llm_sandbox();
    let (mut a, port_a) = serve(&sb, &["phi3"]);
    let (mut b, port_b) = serve(&sb, &["phi3"]);
    assert_ne!(port_a, port_b);
    // A chat client already on the first server.
    let busy = tempfile::tempdir().unwrap();
    let _client = crate::shim_support::named_sleeper(
        busy.path(),
        "ollama",
        &[("OLLAMA_HOST", &format!("localhost:{port_a}"))],
    );
    let attached = sb.run(&["llm", "attach", "phi3"]).ok();
    assert_eq!(attached.stdout, "phi3: Ollama is running\n");
    let run = calls(&sb)
        .into_iter()
        .find(|c| c["args"][0] == "run")
        .unwrap();
    assert_eq!(run["env"]["OLLAMA_HOST"], format!("localhost:{port_b}"));
    for server in [&a, &b] {
        interrupt(server);
    }
    a.wait().unwrap();
    b.wait().unwrap();
}

#[test]
fn errors_are_one_clear_line_and_change_nothing() {
    let sb = llm_sandbox();
    sb.run(&["devices"]).ok();
    let before = sb.snapshot_files();
    let run = sb.run(&["llm", "attach", "nope"]).fails();
    assert_eq!(run.stderr, "Could not find LLM model 'nope'\n");
    let mut cmd = sb.cmd(&["llm", "serve", "llama3"]);
    cmd.env("PATH", "/usr/bin:/bin");
    let run = Run::from(cmd.output().unwrap()).fails();
    assert!(
        run.stderr
            .starts_with("genv: error: Could not find ollama."),
        "{run:?}"
    );
    assert!(run.stderr.contains("hint: install Ollama"), "{run:?}");
    let run = sb
        .run(&["llm", "serve", "llama3", "--gpu-memory", "lots"])
        .fails();
    assert!(
        run.stderr.contains("invalid memory value 'lots'"),
        "{run:?}"
    );
    assert_eq!(sb.snapshot_files(), before);
}

/// Mallory names environments `llm/llama3/PORT` for her own listener: one
/// listing her listener, one listing alice's real server. Alice's server
/// already has a client, so by the names alone mallory's would be the
/// least busy; `genv llm attach` takes ports from the sockets the
/// servers' processes listen on and reaches alice's server.
#[test]
fn attach_reaches_the_port_the_server_listens_on() {
    use crate::common::users::{ALICE, MALLORY, command_as, sleeper_as};
    use std::os::unix::fs::PermissionsExt;
    let mut sb = Sandbox::multi_user();
    let ollama = fixture("ollama");
    sb.set("PATH", &format!("{}:/usr/bin:/bin", ollama.display()));
    let log = sb.dir.path().join("ollama.log");
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    sb.set("OLLAMA_STANDIN_LOG", log.to_str().unwrap());

    let mut server = sb
        .cmd_as(ALICE, &["llm", "serve", "llama3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    let mut listening = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut listening)
        .unwrap();
    let port: u16 = listening
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ollama_pid = calls(&sb)
        .iter()
        .find(|c| c["args"][0] == "serve")
        .and_then(|c| c["pid"].as_u64())
        .unwrap();

    // Mallory's listener, answering HTTP like a server would.
    let mut listener = command_as(MALLORY, "/usr/bin/python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(sb.home_of(MALLORY))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serving = String::new();
    BufReader::new(listener.stdout.take().unwrap())
        .read_line(&mut serving)
        .unwrap();
    let theirs: u16 = serving
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{serving}"));
    let uid = MALLORY.to_string();
    for (eid, pid) in [("m1", listener.id()), ("m2", ollama_pid as u32)] {
        let pid = pid.to_string();
        sb.run_as(
            MALLORY,
            &[
                "envs", "activate", "--eid", eid, "--uid", &uid, "--pid", &pid,
            ],
        )
        .ok();
        let name = format!("llm/llama3/{theirs}");
        sb.run_as(
            MALLORY,
            &["envs", "config", "--eid", eid, "name", "--name", &name],
        )
        .ok();
    }
    // A chat client of alice's on her server.
    let bin = sb.dir.path().join("client-bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink("/bin/sleep", bin.join("ollama")).unwrap();
    let host = format!("localhost:{port}");
    let _client = sleeper_as(ALICE, &bin.join("ollama"), &[("OLLAMA_HOST", &host)]);

    let attached = sb.run_as(ALICE, &["llm", "attach", "llama3"]);
    let run = calls(&sb)
        .into_iter()
        .find(|c| c["args"][0] == "run")
        .map(|c| c["env"]["OLLAMA_HOST"].clone());
    let _ = listener.kill();
    let _ = listener.wait();
    interrupt(&server);
    let _ = server.wait();
    assert_eq!(
        run,
        Some(serde_json::json!(format!("localhost:{port}"))),
        "mallory's port is {theirs}: {attached:?}"
    );
}

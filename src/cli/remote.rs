//! `genv remote`: ask many hosts over SSH for their devices and
//! environments, open a shell on one with room for a new environment,
//! enforce the rules across them, serve their metrics, and serve, list
//! and attach to LLMs on them.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::time::Duration;

use super::{
    Context, EnforceArgs, Exit, MonitorArgs, RemoteArgs, RemoteCommand, RemoteLlmCommand,
    RemoteTableArgs,
};
use crate::enforce::Report;
use crate::error::{Error, Result};
use crate::escape;
use crate::messages::{note, warn_hint};
use crate::monitor::{publish, server};
use crate::os::signals::Blocked;
use crate::output::Layout;
use crate::remote::asker::{Asker, failure};
use crate::remote::enforce::{self as remote_enforce, Usage};
use crate::remote::llm as remote_llm;
use crate::remote::monitor as remote_monitor;
use crate::remote::report;
use crate::remote::ssh::{Answer, Ssh};
use crate::remote::{self, Host, quote};
use crate::state::{Devices, Envs};

pub(crate) fn run(args: RemoteArgs, ctx: &mut Context) -> Result<Exit> {
    let hostfile = match &args.hostfile {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?),
        None => None,
    };
    let hosts = remote::parse_hosts(
        args.hostnames.as_deref(),
        hostfile.as_deref(),
        args.username.as_deref(),
    )?;
    let asker = Asker {
        ssh: Ssh::from_env(args.timeout),
        hosts: &hosts,
        quiet: args.quiet,
        throw_on_error: args.throw_on_error,
    };
    let (all, text) = match args.command {
        RemoteCommand::Devices(table) => {
            let (all, answers) = asker.snapshots::<Devices>(Some("devices"))?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, d)| (h.hostname.as_str(), d))
                .collect();
            let layout = Layout {
                format: table.format,
                header: !table.no_header,
                summary: !table.no_summary,
            };
            (all, report::devices(&rows, layout)?)
        }
        RemoteCommand::Envs { table, timestamp } => {
            let (all, answers) = asker.snapshots::<Envs>(Some("envs"))?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, e)| (h.hostname.as_str(), e))
                .collect();
            let layout = Layout {
                format: table.format,
                header: !table.no_header,
                summary: !table.no_summary,
            };
            let now = crate::timefmt::local_now();
            (all, report::envs(&rows, layout, timestamp, now)?)
        }
        RemoteCommand::Query { name, queries } => {
            let (all, answers) = asker.snapshots::<Envs>(Some("envs"))?;
            let rows: Vec<_> = answers
                .iter()
                .map(|(h, e)| (h.hostname.as_str(), e))
                .collect();
            (all, report::query(&rows, &name, &queries))
        }
        RemoteCommand::Enforce(args) => return enforce(&asker, args, ctx),
        RemoteCommand::Monitor(args) => return monitor(&asker, args, ctx),
        RemoteCommand::Llm { command } => {
            let command = command.unwrap_or(RemoteLlmCommand::Ps {
                table: RemoteTableArgs::default(),
                timestamp: false,
            });
            return llm(&asker, command, ctx);
        }
        RemoteCommand::Activate {
            name,
            gpus,
            gpu_memory,
            no_prompt,
        } => {
            let host = host_with_room(&asker, gpus, gpu_memory.as_deref())?;
            let host = &host;
            let mut vars = vec![
                "GENV_PREACTIVATE=1".to_owned(),
                format!("GENV_PREACTIVATE_PROMPT={}", if no_prompt { 0 } else { 1 }),
            ];
            if let Some(gpus) = gpus.filter(|&g| g > 0) {
                vars.push(format!("GENV_PREACTIVATE_GPUS={gpus}"));
            }
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                vars.push(format!("GENV_PREACTIVATE_ENVIRONMENT_NAME={name}"));
            }
            if let Some(memory) = gpu_memory {
                vars.push(format!("GENV_PREACTIVATE_GPU_MEMORY={memory}"));
            }
            note(format!(
                "activating an environment on {}",
                escape::terminal(&host.hostname)
            ));
            let err = asker
                .ssh
                .command(host, &preactivate_line(&vars), true)
                .exec();
            return Err(Error::new(format!(
                "cannot run {}: {err}",
                asker.ssh.program[0]
            )));
        }
    };
    ctx.out.push_str(&text);
    Ok(if all { Exit::SUCCESS } else { Exit(1) })
}

/// genv 1.4.3 also takes `genv remote -host …` and `-hostfile …`
/// (argparse); clap would read `-host` as `-h -o -s -t`, so those two
/// words, before the subcommand, are given their two dashes.
pub(crate) fn single_dash_options(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_none_or(|a| a != "remote") {
        return args;
    }
    let mut i = 2;
    while i < args.len() {
        let arg = &args[i];
        if arg == "-host" || arg == "-hostfile" {
            let mut long = OsString::from("-");
            long.push(arg);
            args[i] = long;
        } else if !arg.to_string_lossy().starts_with('-') {
            break;
        }
        // Skip the value of an option that takes one.
        if [
            "-H",
            "--host",
            "--hosts",
            "--hostfile",
            "-l",
            "--username",
            "-t",
            "--timeout",
        ]
        .iter()
        .any(|o| args[i] == *o)
        {
            i += 1;
        }
        i += 1;
    }
    args
}

/// The remote command that replaces the login shell with a login shell
/// whose genv init script activates an environment as `vars` say.
fn preactivate_line(vars: &[String]) -> String {
    let vars: Vec<String> = vars.iter().map(|v| quote(v)).collect();
    format!("exec env {} \"$SHELL\" -l", vars.join(" "))
}

/// `genv remote enforce`: every interval, the snapshots of all hosts, the
/// rules over them (quotas counted across hosts), and each host's report
/// executed there by `genv usage execute`.
fn enforce(asker: &Asker<'_>, args: EnforceArgs, ctx: &mut Context) -> Result<Exit> {
    let rules = args.rules();
    if args.grace != 5.0 {
        warn_hint(
            "--grace has no effect with genv remote",
            "each host terminates with SIGTERM as `genv usage execute` does (genv 1.4.3's protocol)",
        );
    }
    if args.dry_run {
        note("dry run: no report is sent to the hosts");
    }
    let signals = (args.interval > 0).then(Blocked::block);
    let mut all_answered = true;
    loop {
        let (all, answers) = asker.snapshots::<Usage>(None)?;
        all_answered &= all;
        let rows: Vec<(&str, &Usage)> = answers
            .iter()
            .map(|(h, u)| (h.hostname.as_str(), u))
            .collect();
        let decision = remote_enforce::decide(&rows, &rules);
        if args.report {
            for line in &decision.lines {
                crate::messages::relay(line);
            }
            let mut map = serde_json::Map::new();
            for ((host, _), report) in answers.iter().zip(&decision.reports) {
                map.insert(
                    host.hostname.clone(),
                    serde_json::to_value(report).map_err(|e| Error::new(e.to_string()))?,
                );
            }
            crate::output::json::push(&mut ctx.out, &map)?;
        } else {
            for line in &decision.lines {
                ctx.out.push_str(line);
                ctx.out.push('\n');
            }
            let hosts: Vec<Host> = answers.iter().map(|(h, _)| h.clone()).collect();
            if args.dry_run {
                for (host, report) in hosts.iter().zip(&decision.reports) {
                    if !remote_enforce::is_empty(report) {
                        ctx.out.push_str(&format!(
                            "[{}] would terminate {} process(es) and detach {} environment(s)\n",
                            escape::terminal(&host.hostname),
                            report.terminate.processes.len(),
                            report.detach.values().map(|e| e.envs.len()).sum::<usize>()
                        ));
                    }
                }
            } else {
                all_answered &= execute(asker, &hosts, &decision.reports, &mut ctx.out)?;
            }
        }
        let _ = ctx.flush();
        let Some(signals) = &signals else {
            return Ok(if all_answered { Exit::SUCCESS } else { Exit(1) });
        };
        if let Some(signal) = signals.wait(Duration::from_secs(args.interval)) {
            note(format!("stopping on {}", Blocked::name(signal)));
            return Ok(Exit::SUCCESS);
        }
    }
}

/// Sends each host with something to do its report (`genv usage
/// execute`, as genv 1.4.3 sends it) and shows what it said, prefixed
/// with its name; whether every host executed its report.
fn execute(
    asker: &Asker<'_>,
    hosts: &[Host],
    reports: &[Report],
    out: &mut String,
) -> Result<bool> {
    let line = remote::command_line(&["genv", "usage", "execute"]);
    let mut jsons = Vec::with_capacity(reports.len());
    for report in reports {
        jsons.push(if remote_enforce::is_empty(report) {
            None
        } else {
            Some(String::from_utf8_lossy(&crate::output::json::to_json(report)?).into_owned())
        });
    }
    let answers = asker.ssh.run_all_some(hosts, |i| {
        jsons[i].clone().map(|json| (line.clone(), Some(json)))
    });
    let mut all = true;
    for (host, answer) in hosts.iter().zip(answers) {
        let shown = escape::terminal(&host.hostname);
        match answer {
            None => {}
            Some(Answer::Ok { stdout, stderr }) => {
                for line in stdout.lines() {
                    out.push_str(&format!("[{shown}] {}\n", escape::terminal(line)));
                }
                for line in stderr.lines() {
                    crate::messages::relay(format_args!("[{shown}] {}", escape::terminal(line)));
                }
            }
            Some(Answer::Failed { code, stderr }) => {
                all = false;
                let (message, hint) = failure(&host.hostname, code, &stderr);
                asker.failed(message, hint)?;
            }
        }
    }
    Ok(all)
}

/// `genv remote monitor`: one exporter for all hosts, each collection
/// asking every host; a host that fails is reported and left out of that
/// collection's metrics.
fn monitor(asker: &Asker<'_>, args: MonitorArgs, ctx: &mut Context) -> Result<Exit> {
    let signals = Blocked::block();
    let listener = server::bind(&args.host, args.port)?;
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| ctx.dir.path("metrics"));
    let exporter = super::monitor::exporter_address(&args.host, args.port);
    publish::publish(&ctx.dir, &config_dir, &exporter)?;
    let options = server::Options {
        interval: Duration::from_secs(args.interval),
        announce: format!(
            "serving the metrics of {} host(s) at http://{exporter}/metrics every {}s; Prometheus and Grafana files in {}",
            asker.hosts.len(),
            args.interval,
            config_dir.display()
        ),
    };
    let script = remote_monitor::script();
    server::run(listener, &signals, &options, || {
        let answers = asker.script(&script);
        let (_, answered) = asker.read(asker.hosts, answers, "metrics", remote_monitor::parse)?;
        let rows: Vec<_> = answered
            .iter()
            .map(|(h, (snapshot, installed))| (h.hostname.as_str(), snapshot, *installed))
            .collect();
        Ok(remote_monitor::families(&rows))
    })
    .map(Exit)
}

/// `genv remote llm …`.
fn llm(asker: &Asker<'_>, command: RemoteLlmCommand, ctx: &mut Context) -> Result<Exit> {
    match command {
        RemoteLlmCommand::Ps { table, timestamp } => {
            let answers = asker.script(remote_llm::SCRIPT);
            let (all, answered) =
                asker.read(asker.hosts, answers, "list of LLMs", remote_llm::parse)?;
            let rows: Vec<(&str, &[remote_llm::Server])> = answered
                .iter()
                .map(|(h, s)| (h.hostname.as_str(), s.as_slice()))
                .collect();
            let layout = Layout {
                format: table.format,
                header: !table.no_header,
                summary: !table.no_summary,
            };
            let now = crate::timefmt::local_now();
            ctx.out
                .push_str(&remote_llm::ps(&rows, layout, timestamp, now)?);
            Ok(if all { Exit::SUCCESS } else { Exit(1) })
        }
        RemoteLlmCommand::Attach { model } => {
            let answers = asker.script(remote_llm::SCRIPT);
            let (_, answered) =
                asker.read(asker.hosts, answers, "list of LLMs", remote_llm::parse)?;
            let lists: Vec<&[remote_llm::Server]> =
                answered.iter().map(|(_, s)| s.as_slice()).collect();
            let Some(index) = remote_llm::pick(&lists, &model) else {
                return Err(crate::error::reference::no_llm_model(&escape::terminal(
                    &model,
                )));
            };
            let host = &answered[index].0;
            note(format!(
                "attaching to {} on {}",
                escape::terminal(&model),
                escape::terminal(&host.hostname)
            ));
            let args: Vec<String> = ["genv", "llm", "attach", &model]
                .map(str::to_owned)
                .to_vec();
            Err(asker.exec_on(host, &args))
        }
        RemoteLlmCommand::Serve {
            model,
            port,
            gpus,
            gpu_memory,
        } => {
            if let Some(memory) = &gpu_memory {
                crate::memory::validate(memory)?;
            }
            let host = host_with_room(asker, gpus, gpu_memory.as_deref())?;
            let host = &host;
            let mut args: Vec<String> =
                ["genv", "llm", "serve", &model].map(str::to_owned).to_vec();
            if let Some(gpus) = gpus.filter(|&g| g > 0) {
                args.extend(["--gpus".to_owned(), gpus.to_string()]);
            }
            if let Some(memory) = gpu_memory {
                args.extend(["--gpu-memory".to_owned(), memory]);
            }
            if let Some(port) = port {
                args.extend(["--port".to_owned(), port.to_string()]);
            }
            note(format!(
                "serving {} on {}",
                escape::terminal(&model),
                escape::terminal(&host.hostname)
            ));
            Err(asker.exec_on(host, &args))
        }
    }
}

/// genv 1.4.3's line for a host that failed, on one line and safe for a
/// terminal, and a hint when the fix is known.
/// The first host with the devices (and memory on them) asked for, as
/// `activate` and `llm serve` choose it; 1.4.3's message when none has.
fn host_with_room(asker: &Asker<'_>, gpus: Option<u32>, gpu_memory: Option<&str>) -> Result<Host> {
    let memory = gpu_memory.map(crate::memory::to_bytes).transpose()?;
    let (_, mut answers) = asker.snapshots::<Devices>(Some("devices"))?;
    let snapshots: Vec<&Devices> = answers.iter().map(|(_, d)| d).collect();
    match report::find_host(&snapshots, gpus, memory) {
        Some(index) => Ok(answers.swap_remove(index).0),
        None => Err(crate::error::reference::no_host()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_dash_host_options_get_two_dashes() {
        let args = |s: &str| s.split(' ').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            single_dash_options(args("genv remote -l u -host a,b devices")),
            args("genv remote -l u --host a,b devices")
        );
        assert_eq!(
            single_dash_options(args("genv remote -hostfile f envs --name -host")),
            args("genv remote --hostfile f envs --name -host")
        );
        assert_eq!(
            single_dash_options(args("genv envs -host")),
            args("genv envs -host")
        );
    }

    #[test]
    fn the_preactivation_line_quotes_every_value() {
        assert_eq!(
            preactivate_line(&["GENV_PREACTIVATE_ENVIRONMENT_NAME=a b'c".into()]),
            r#"exec env 'GENV_PREACTIVATE_ENVIRONMENT_NAME=a b'\''c' "$SHELL" -l"#
        );
    }
}

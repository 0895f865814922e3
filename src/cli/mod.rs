//! The command line: clap types here, one file per verb with its `run`.

pub(crate) mod activate;
pub(crate) mod attach;
pub(crate) mod config;
pub(crate) mod deactivate;
pub(crate) mod detach;
pub(crate) mod devices;
pub(crate) mod docker;
pub(crate) mod enforce;
pub(crate) mod envs;
pub(crate) mod home;
pub(crate) mod llm;
pub(crate) mod lock;
pub(crate) mod monitor;
mod parse;
pub(crate) mod remote;
pub(crate) mod sdk;
pub mod shell;
pub(crate) mod status;
pub(crate) mod top;
pub(crate) mod usage;
pub mod version;

pub use crate::context::{Context, Exit};
pub use crate::output::Format;
pub use crate::top::TopSort;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "genv",
    about = "Query and control Genv on this machine or in a cluster",
    disable_version_flag = true
)]
pub struct Cli {
    /// Print this implementation's release and commit (`genv version`
    /// prints the genv release it is compatible with)
    #[arg(short = 'V', long = "version")]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Each verb's arguments are built only when that verb is run (`defer`):
/// a command line costs its own verb, not all of genv's.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Activate shell environment
    Activate(ActivateArgs),
    /// Attach devices to this environment
    Attach(AttachArgs),
    /// Configure the current environment
    Config(ConfigArgs),
    /// Serve the state folder as root: only an environment's owner (or
    /// root) may change it (locked-down machines)
    Daemon,
    /// Deactivate shell environment
    Deactivate(DeactivateArgs),
    /// Detach devices from this environment
    Detach(DetachArgs),
    /// Query and manage devices
    Devices(DevicesArgs),
    /// Enforce GPU usage
    Enforce(EnforceArgs),
    /// `genv-docker`: run a container as an environment (hidden: not a
    /// verb of genv 1.4.3)
    #[command(hide = true)]
    Docker(DockerArgs),
    /// Query and manage environments
    Envs(EnvsArgs),
    /// Show the home directory of the current environment
    Home(HomeArgs),
    /// The shell initialisation, as `genv shell --init` prints it; `-` (or
    /// nothing) detects the shell (jupyterlab-genv tells its users to run
    /// `eval "$(genv init -)"`)
    #[command(hide = true)]
    Init(InitArgs),
    /// Serve, list and chat with LLMs (Ollama) in environments
    #[command(visible_alias = "llms")]
    Llm(LlmArgs),
    /// Lock over-subscribed devices
    Lock(LockArgs),
    /// Plumbing for the Python SDK (`import genv`): JSON answers
    #[command(hide = true)]
    Sdk(SdkArgs),
    /// Monitor using Prometheus and Grafana
    Monitor(MonitorArgs),
    /// Query and use the GPUs of many hosts over SSH
    Remote(RemoteArgs),
    /// Shell support
    Shell(ShellArgs),
    /// Show status of the current environment
    Status,
    /// Live view of devices, environments, users and processes
    Top(TopArgs),
    /// GPU usage miscellaneous
    Usage(UsageArgs),
    /// Print Genv version
    Version,
}

impl Cli {
    /// Whether `genv daemon`, where one serves the state folder, runs this
    /// command line: the verbs that read or change the state and run
    /// nothing of the user's, and `genv lock`, whose locks the daemon
    /// takes and keeps for the caller while the caller runs the command.
    pub fn runs_in_daemon(&self) -> bool {
        if self.version {
            return false;
        }
        match &self.command {
            Some(
                Command::Activate(_)
                | Command::Attach(_)
                | Command::Config(_)
                | Command::Deactivate(_)
                | Command::Detach(_)
                | Command::Devices(_)
                | Command::Envs(_)
                | Command::Lock(_)
                | Command::Status,
            ) => true,
            // `hold` keeps the locks in the caller's process.
            Some(Command::Sdk(args)) => !matches!(args.command, SdkCommand::Hold),
            // `execute` signals processes: root runs it, as itself.
            Some(Command::Usage(args)) => matches!(args.command, UsageCommand::Snapshot { .. }),
            _ => false,
        }
    }
}

// `--no-cleanup` and `--reset`, which `envs` and `devices` take before
// their subcommand.
#[derive(Debug, Args, Clone, Copy)]
pub struct StateArgs {
    /// Do not perform clean up
    #[arg(long = "no-cleanup")]
    pub no_cleanup: bool,
    /// Reset previous state
    #[arg(long)]
    pub reset: bool,
}

impl StateArgs {
    pub fn options(self) -> crate::state::LoadOptions {
        crate::state::LoadOptions {
            cleanup: !self.no_cleanup,
            reset: self.reset,
        }
    }
}

#[derive(Debug, Args, Clone, Copy)]
pub struct PsArgs {
    /// Do not print column headers
    #[arg(long = "no-header")]
    pub no_header: bool,
    /// Print a non-prettified timestamp
    #[arg(long)]
    pub timestamp: bool,
    /// Output format; CSV, TUI (Text-based user interface) or JSON
    #[arg(long, value_enum, default_value_t = Format::Tui)]
    pub format: Format,
}

impl Default for PsArgs {
    fn default() -> Self {
        PsArgs {
            no_header: false,
            timestamp: false,
            format: Format::Tui,
        }
    }
}

#[derive(Debug, Args)]
pub struct EnvsArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub command: Option<EnvsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum EnvsCommand {
    /// Activate a process or a Jupyter kernel
    Activate {
        /// Environment identifier
        #[arg(long)]
        eid: String,
        /// User identifier
        #[arg(long)]
        uid: u32,
        /// User name
        #[arg(long)]
        username: Option<String>,
        #[command(flatten)]
        target: ProcessOrKernel,
    },
    /// Configure an environment
    Config {
        /// Environment identifier
        #[arg(long)]
        eid: String,
        #[command(subcommand)]
        config: ConfigField,
    },
    /// Deactivate a process or a Jupyter kernel
    Deactivate {
        /// Process identifier
        #[arg(long)]
        pid: i64,
    },
    /// Find the environment of a process or a Jupyter kernel
    Find {
        #[command(flatten)]
        target: ProcessOrKernel,
    },
    /// Print information about active environments
    Ps(PsArgs),
    /// Query environments or a specific one
    Query {
        /// Environment identifier
        #[arg(long)]
        eid: Option<String>,
        #[arg(long = "query", visible_alias = "queries", num_args = 1.., required = true, value_parser = envs::QUERIES)]
        queries: Vec<String>,
    },
}

#[derive(Debug, Args, Clone)]
#[group(required = true, multiple = false)]
pub struct ProcessOrKernel {
    /// Process identifier
    #[arg(long)]
    pub pid: Option<i64>,
    /// Jupyter kernel identifier
    #[arg(long = "kernel-id")]
    pub kernel_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigField {
    /// Configure device count for environment
    Gpus {
        /// Device count
        #[arg(long, conflicts_with = "clear", required_unless_present = "clear")]
        count: Option<u32>,
        /// Clear device count
        #[arg(long)]
        clear: bool,
    },
    /// Configure environment name
    Name {
        /// Environment name
        #[arg(
            long,
            conflicts_with = "clear",
            required_unless_present = "clear",
            allow_hyphen_values = true
        )]
        name: Option<String>,
        /// Clear environment name
        #[arg(long)]
        clear: bool,
    },
    /// Configure environment GPU memory capacity
    #[command(name = "gpu-memory")]
    GpuMemory {
        /// Environment GPU memory capacity
        #[arg(
            long = "gpu-memory",
            conflicts_with = "clear",
            required_unless_present = "clear"
        )]
        gpu_memory: Option<String>,
        /// Clear environment GPU memory capacity
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub state: StateArgs,
    #[command(subcommand)]
    pub command: Option<DevicesCommand>,
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Attach devices to an environment
    Attach {
        /// Environment identifier
        #[arg(long)]
        eid: String,
        /// Use unavailable devices if needed
        #[arg(long = "allow-over-subscription")]
        allow_over_subscription: bool,
        /// Total devices count to be attached
        #[arg(long, conflicts_with = "index")]
        count: Option<u32>,
        /// Device index to attach specifically
        #[arg(long)]
        index: Option<u32>,
        /// Wait (up to SECONDS, or as long as it takes) until the devices
        /// can be attached, first come first served, instead of failing
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true, default_missing_value = "", value_parser = crate::provision::Wait::parse)]
        wait: Option<crate::provision::Wait>,
    },
    /// Detach devices from an environment
    Detach {
        /// Environment identifier
        #[arg(long)]
        eid: String,
        /// Device index to dettach
        #[arg(long)]
        index: Option<u32>,
        /// Don't print updated device indexes
        #[arg(long)]
        quiet: bool,
    },
    /// Find the devices attached to an enviornment
    Find {
        /// Environment identifier
        #[arg(long)]
        eid: String,
    },
    /// Print information about devices
    Ps(PsArgs),
    /// Query devices
    Query {
        #[arg(long = "query", visible_alias = "queries", num_args = 1.., required = true, value_parser = devices::QUERIES)]
        queries: Vec<String>,
    },
    /// Not in genv 1.4.3: who holds and who waits for each device's lock
    Locks(PsArgs),
    /// Not in genv 1.4.3: the requests waiting for devices (`--wait`), in order
    Queue,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("hosts").required(true).args(["hostnames", "hostfile"])))]
pub struct RemoteArgs {
    /// Comma-separated hostnames or IP addresses (user@host for a login)
    #[arg(short = 'H', long = "host", visible_alias = "hosts")]
    pub hostnames: Option<String>,
    /// A file containing one hostname or IP address per line
    #[arg(long)]
    pub hostfile: Option<std::path::PathBuf>,
    /// SSH login name
    #[arg(short = 'l', long)]
    pub username: Option<String>,
    /// SSH connection timeout in seconds
    #[arg(short = 't', long)]
    pub timeout: Option<u64>,
    /// Exit on SSH error to one or more hosts
    #[arg(short = 'e', long = "exit-on-error", visible_alias = "throw-on-error")]
    pub throw_on_error: bool,
    /// Ignore SSH errors
    #[arg(short, long)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: RemoteCommand,
}

// `--no-header`, `--no-summary` and `--format` of the remote tables.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct RemoteTableArgs {
    /// Do not print column headers
    #[arg(long = "no-header")]
    pub no_header: bool,
    /// Do not print summary
    #[arg(long = "no-summary")]
    pub no_summary: bool,
    /// Output format; CSV, TUI (Text-based user interface) or JSON
    #[arg(long, value_enum, default_value_t = Format::Tui)]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Activate environment in a remote host
    Activate {
        /// Environment name
        #[arg(long, allow_hyphen_values = true)]
        name: Option<String>,
        /// Environment device count
        #[arg(long)]
        gpus: Option<u32>,
        /// Environment device memory capacity (e.g. 4g)
        #[arg(long = "gpu-memory")]
        gpu_memory: Option<String>,
        /// Don't change the shell prompt
        #[arg(long = "no-prompt")]
        no_prompt: bool,
    },
    /// Show device information from all hosts
    Devices(RemoteTableArgs),
    /// Enforce GPU usage on all hosts (per-user quotas count every host)
    Enforce(EnforceArgs),
    /// Run and attach to LLMs on remote hosts
    #[command(visible_alias = "llms")]
    Llm {
        /// What to do; without one, the served models are listed (`ps`)
        #[command(subcommand)]
        command: Option<RemoteLlmCommand>,
    },
    /// Monitor remote hosts using Prometheus and Grafana
    Monitor(MonitorArgs),
    /// List all active environments
    Envs {
        #[command(flatten)]
        table: RemoteTableArgs,
        /// Print a non-prettified timestamp
        #[arg(long)]
        timestamp: bool,
    },
    /// Query environments or a specific one
    Query {
        /// Environment name
        #[arg(long, required = true, allow_hyphen_values = true)]
        name: String,
        #[arg(long = "query", visible_alias = "queries", required = true, num_args = 1.., value_parser = crate::remote::report::QUERIES)]
        queries: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RemoteLlmCommand {
    /// Attach to a running LLM model (on the host whose server has the fewest clients)
    Attach {
        /// Model name (e.g. llama3)
        model: String,
    },
    /// Print information about active LLMs on all hosts
    Ps {
        #[command(flatten)]
        table: RemoteTableArgs,
        /// Print a non-prettified timestamp
        #[arg(long)]
        timestamp: bool,
    },
    /// Start an LLM server on the first host with enough available resources
    Serve {
        /// Model name (e.g. llama3)
        model: String,
        /// Port to bind on that host (a free one when not given)
        #[arg(short, long)]
        port: Option<u16>,
        /// Device count
        #[arg(long)]
        gpus: Option<u32>,
        /// Device memory capacity (e.g. 4g)
        #[arg(long = "gpu-memory")]
        gpu_memory: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct HomeArgs {
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct EnforceArgs {
    /// Interval in seconds between enforcement cycles; 0 means run once
    #[arg(long, default_value_t = 10, value_name = "INTERVAL", allow_negative_numbers = true, value_parser = parse::parse_enforce_interval)]
    pub interval: u64,
    /// Also print genv 1.4.3's [DEBUG] lines (a process that ended by itself)
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Terminate processes that are not running in a GPU environment (default: False)
    #[arg(long = "non-env-processes", conflicts_with = "no_non_env_processes")]
    pub non_env_processes: bool,
    #[arg(long = "no-non-env-processes")]
    pub no_non_env_processes: bool,
    /// Enforce environment attached devices (default: True)
    #[arg(long = "env-devices", conflicts_with = "no_env_devices")]
    pub env_devices: bool,
    #[arg(long = "no-env-devices")]
    pub no_env_devices: bool,
    /// Enforce environment memory capacity if set (default: True)
    #[arg(long = "env-memory", conflicts_with = "no_env_memory")]
    pub env_memory: bool,
    #[arg(long = "no-env-memory")]
    pub no_env_memory: bool,
    /// Maximum allowed attached devices for each user
    #[arg(long = "max-devices-per-user", value_name = "MAX_DEVICES_PER_USER")]
    pub max_devices_per_user: Option<u64>,
    /// Per-user specification of maximum allowed attached devices
    #[arg(long = "max-devices-for-user", num_args = 1.., value_name = "username=maximum",
          value_parser = parse::parse_devices_spec)]
    pub max_devices_for_user: Vec<(String, u64)>,
    /// Maximum GPU memory for each user, reserved or used (e.g. 40g)
    #[arg(long = "max-memory-per-user", value_name = "AMOUNT",
          value_parser = parse::parse_memory)]
    pub max_memory_per_user: Option<u64>,
    /// Per-user maximum GPU memory
    #[arg(long = "max-memory-for-user", num_args = 1.., value_name = "username=amount",
          value_parser = parse::parse_memory_spec)]
    pub max_memory_for_user: Vec<(String, u64)>,
    /// Seconds a process has to exit after SIGTERM before SIGKILL
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS",
          value_parser = parse::parse_grace)]
    pub grace: f64,
    /// Say what would be done; signal and detach nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Print each cycle's report as JSON (what `genv usage execute` reads) instead of acting; the rules' lines go to stderr
    #[arg(long)]
    pub report: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: UsageCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Execute the report passed in stdin
    Execute {
        /// Also print genv 1.4.3's [DEBUG] lines (a process that ended by itself)
        #[arg(short = 'v', long)]
        verbose: bool,
    },
    /// Take a snapshot of GPU usage
    Snapshot {
        /// Output format (json)
        #[arg(long, value_parser = ["json"], default_value = "json")]
        format: String,
        /// Take a snapshot of specific information
        #[arg(long = "type", value_parser = ["devices", "envs", "processes"])]
        kind: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The pid of the shell, passed by the `genv` shell function
    #[arg(long, hide = true)]
    pub shell: Option<i64>,
    /// Activate as `GENV_PREACTIVATE*` say (used by the init script)
    #[arg(long, hide = true)]
    pub preactivate: bool,
    /// Environment identifier (join it when it exists)
    #[arg(long = "eid", visible_alias = "id")]
    pub eid: Option<String>,
    /// Environment name
    #[arg(long, allow_hyphen_values = true)]
    pub name: Option<String>,
    /// Environment device memory capacity (e.g. 4g)
    #[arg(long = "gpu-memory")]
    pub gpu_memory: Option<String>,
    /// Environment device count
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Don't change the prompt
    #[arg(long = "no-prompt")]
    pub no_prompt: bool,
    /// Don't attach to devices
    #[arg(long = "no-attach")]
    pub no_attach: bool,
    /// Use unavailable devices if needed
    #[arg(short = 'o', long = "over-subscribe")]
    pub over_subscribe: bool,
    /// Don't load configuration from the .genv folder
    #[arg(long = "no-load")]
    pub no_load: bool,
    /// Wait (up to SECONDS, or as long as it takes) for the devices
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true, default_missing_value = "", value_parser = crate::provision::Wait::parse)]
    pub wait: Option<crate::provision::Wait>,
}

#[derive(Debug, Args)]
pub struct DeactivateArgs {
    /// The pid of the shell, passed by the `genv` shell function
    #[arg(long, hide = true)]
    pub shell: Option<i64>,
}

#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Use device count from configuration (default)
    #[arg(long, conflicts_with_all = ["count", "index", "refresh"])]
    pub config: bool,
    /// Total number of devices to be attached
    #[arg(long, conflicts_with_all = ["index", "refresh"])]
    pub count: Option<u32>,
    /// Attach to the device with the given index
    #[arg(long, conflicts_with = "refresh")]
    pub index: Option<u32>,
    /// Only refresh attachments
    #[arg(long)]
    pub refresh: bool,
    /// Use unavailable devices if needed
    #[arg(short = 'o', long = "over-subscribe")]
    pub over_subscribe: bool,
    /// Wait (up to SECONDS, or as long as it takes) until the devices can be
    /// attached, first come first served
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, require_equals = true, default_missing_value = "", value_parser = crate::provision::Wait::parse)]
    pub wait: Option<crate::provision::Wait>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// bash, zsh, fish, or `-` to detect it
    #[arg(value_name = "SHELL")]
    pub shell: Option<String>,
}

#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Device index to detach from
    #[arg(long)]
    pub index: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print nothing (also --refresh)
    #[arg(short, long, visible_alias = "refresh")]
    pub quiet: bool,
    /// Clear the field (or the whole configuration)
    #[arg(long, global = true)]
    pub clear: bool,
    /// Load configuration from disk
    #[arg(long, global = true)]
    pub load: bool,
    /// Save updated configuration to disk
    #[arg(long, global = true)]
    pub save: bool,
    #[command(subcommand)]
    pub field: Option<ConfigFieldArg>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigFieldArg {
    /// Environment device memory capacity (e.g. 4g)
    #[command(name = "gpu-memory")]
    GpuMemory { value: Option<String> },
    /// Environment device count
    Gpus { value: Option<String> },
    /// Environment name
    Name {
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
}

#[derive(Debug, Args)]
#[group(id = "action", multiple = false)]
pub struct ShellArgs {
    /// Print the init script (bash, zsh or fish; detected when not given)
    #[arg(long, value_name = "SHELL", num_args = 0..=1, group = "action")]
    pub init: Option<Option<crate::shell::Shell>>,
    /// Print the script that undoes the init script
    #[arg(long, value_name = "SHELL", num_args = 0..=1, group = "action")]
    pub deinit: Option<Option<crate::shell::Shell>>,
    /// Say whether the shell is initialized
    #[arg(long, group = "action")]
    pub ok: bool,
    /// Print code refreshing the attached devices' variables
    #[arg(long, value_name = "SHELL", num_args = 0..=1, group = "action")]
    pub reattach: Option<Option<crate::shell::Shell>>,
    /// Print code refreshing the configuration's variables
    #[arg(long, value_name = "SHELL", num_args = 0..=1, group = "action")]
    pub reconfigure: Option<Option<crate::shell::Shell>>,
    /// Print completions for a shell
    #[arg(long, value_name = "SHELL", group = "action")]
    pub completions: Option<crate::shell::Shell>,
}

// `genv monitor`: genv 1.4.3's flags, and `--host`.
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Directory to create Prometheus and Grafana config files at (default: $GENV_TMPDIR/metrics)
    #[arg(long = "config-dir", value_name = "CONFIG_DIR")]
    pub config_dir: Option<std::path::PathBuf>,
    /// Port for Prometheus exporter to listen on
    #[arg(short = 'p', long = "port", default_value_t = 8000)]
    pub port: u16,
    /// Interval in seconds between collections
    #[arg(short = 'i', long = "interval", default_value_t = 10, allow_negative_numbers = true, value_parser = parse::parse_monitor_interval)]
    pub interval: u64,
    /// Address to listen on; by default every address (0.0.0.0), as genv 1.4.3: anyone who can reach the port can read the metrics
    #[arg(long = "host", default_value = "0.0.0.0")]
    pub host: String,
}

// `genv top` (not in genv 1.4.3).
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Print one frame as plain text and exit (for scripts)
    #[arg(long = "once")]
    pub once: bool,
    /// Seconds between refreshes
    #[arg(
        short = 'd',
        long = "delay",
        default_value_t = 1.0,
        value_name = "SECONDS"
    )]
    pub delay: f64,
    /// Sort environments and processes by this column
    #[arg(short = 's', long = "sort", value_enum, default_value_t = TopSort::Memory)]
    pub sort: TopSort,
}

// `genv lock`: genv 1.4.3 takes only the command; the options are those
// of `flock(1)` that fit.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// Fail (exit 1) rather than wait if a device is in use
    #[arg(short = 'n', long = "nonblock", visible_alias = "nb")]
    pub nonblock: bool,
    /// Fail (exit 1) if the locks are not taken within SECONDS
    #[arg(short = 'w', long = "timeout", visible_alias = "wait", value_name = "SECONDS", value_parser = parse_seconds)]
    pub timeout: Option<std::time::Duration>,
    /// Share the devices with everyone but exclusive holders, using no memory
    #[arg(short = 's', long = "shared", conflicts_with = "exclusive")]
    pub shared: bool,
    /// Take the devices whole, even with a memory capacity
    #[arg(short = 'x', long = "exclusive", visible_short_alias = 'e')]
    pub exclusive: bool,
    /// Exit code when a device is busy (-n) or the timeout passes (-w)
    #[arg(short = 'E', long = "conflict-exit-code", value_name = "CODE")]
    pub conflict_exit_code: Option<i32>,
    /// Command to run under the device lock
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<std::ffi::OsString>,
}

fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("'{value}' is not a number of seconds (e.g. 10 or 0.5)"))
}

// `genv sdk`: what the Python SDK asks of genv, one JSON line an answer.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct DockerArgs {
    /// The engine's command line, with genv's options of `run`
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<std::ffi::OsString>,
}

#[derive(Debug, Args)]
pub struct SdkArgs {
    #[command(subcommand)]
    pub command: SdkCommand,
}

#[derive(Debug, Subcommand)]
pub enum SdkCommand {
    /// Create or join an environment for a process and attach its configured count
    Activate {
        #[arg(long)]
        eid: String,
        /// The process the environment lives with
        #[arg(long)]
        pid: i64,
        /// The whole configuration as JSON (kept as it is when not given)
        #[arg(long)]
        config: Option<String>,
    },
    /// Replace an environment's configuration (JSON; missing fields are cleared)
    Configure {
        #[arg(long)]
        eid: String,
        #[arg(long)]
        config: String,
    },
    /// An environment's configuration and devices
    Show {
        #[arg(long)]
        eid: String,
    },
    /// The devices and their memory
    Devices,
    /// The devices of this process's environment as the process knows them: in a container, the device locks mounted into it; elsewhere `CUDA_VISIBLE_DEVICES`
    Attached,
    /// Say `held`, then wait for a line on standard input or its end (run under `genv lock`)
    Hold,
}

#[derive(Debug, Args)]
pub struct LlmArgs {
    /// What to do; without one, the served models are listed (`ps`), as
    /// genv 1.4.3 does
    #[command(subcommand)]
    pub command: Option<LlmCommand>,
}

#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Attach to a running LLM model
    Attach {
        /// Model name (e.g. llama3)
        model: String,
    },
    /// Print information about active LLMs
    Ps(PsArgs),
    /// Start an LLM server
    Serve {
        /// Model name (e.g. llama3)
        model: String,
        /// Network interface to bind
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Port to bind (a free one when not given)
        #[arg(short, long)]
        port: Option<u16>,
        /// Device count
        #[arg(long)]
        gpus: Option<u32>,
        /// Device memory capacity (e.g. 4g)
        #[arg(long = "gpu-memory")]
        gpu_memory: Option<String>,
    },
}

//! The command line: clap types here, one file per verb with its `run`.

pub mod devices;
pub mod envs;
pub mod home;
pub mod lock;
pub mod usage;
pub mod version;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "genv",
    about = "Query and control Genv on this machine or in a cluster",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Query and manage devices
    Devices(DevicesArgs),
    /// Query and manage environments
    Envs(EnvsArgs),
    /// Show the home directory of the current environment
    Home(HomeArgs),
    /// Lock over-subscribed devices
    Lock(LockArgs),
    /// GPU usage miscellaneous
    Usage(UsageArgs),
    /// Print Genv version
    Version,
}

/// `--no-cleanup` and `--reset`, which `envs` and `devices` take before
/// their subcommand.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    Csv,
    #[default]
    Tui,
    /// Not in genv 1.4.3: the rows as JSON, for scripts.
    Json,
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
}

#[derive(Debug, Args)]
pub struct HomeArgs {
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    #[command(subcommand)]
    pub command: UsageCommand,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// Execute the report passed in stdin
    Execute,
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

/// `genv lock`: genv 1.4.3 takes only the command; the options are those
/// of `flock(1)` that fit.
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

//! The command line: clap types here, one file per verb with its `run`.

pub mod devices;
pub mod envs;
pub mod home;
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

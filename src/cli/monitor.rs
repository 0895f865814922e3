//! `genv monitor`: serves the machine's metrics for Prometheus and
//! publishes ready configurations for Prometheus and Grafana.

use std::time::Duration;

use super::{Context, Exit, MonitorArgs};
use crate::error::Result;
use crate::monitor::snapshot::Snapshot;
use crate::monitor::{metrics, publish, server};
use crate::os::signals::Blocked;

pub(crate) fn run(args: MonitorArgs, ctx: &mut Context) -> Result<Exit> {
    // Before any thread starts, so that all of them leave the signals to
    // the collection loop.
    let signals = Blocked::block();
    let listener = server::bind(&args.host, args.port)?;
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(|| ctx.dir.path("metrics"));
    let exporter = exporter_address(&args.host, args.port);
    publish::publish(&ctx.dir, &config_dir, &exporter)?;
    let options = server::Options {
        interval: Duration::from_secs(args.interval),
        announce: format!(
            "serving metrics at http://{exporter}/metrics every {}s; Prometheus and Grafana files in {}",
            args.interval,
            config_dir.display()
        ),
    };
    let (dir, backend) = (&ctx.dir, ctx.backend.get());
    server::run(listener, &signals, &options, || {
        Snapshot::take(dir, backend).map(|s| metrics::collect(&s))
    })
    .map(Exit)
}

/// Where Prometheus on this machine reaches the exporter: `localhost` when
/// it listens on every address, as genv 1.4.3 publishes it.
pub(crate) fn exporter_address(host: &str, port: u16) -> String {
    match host {
        "0.0.0.0" | "::" | "" => format!("localhost:{port}"),
        h if h.contains(':') => format!("[{h}]:{port}"),
        h => format!("{h}:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::exporter_address;

    #[test]
    fn publishes_a_reachable_address() {
        assert_eq!(exporter_address("0.0.0.0", 8000), "localhost:8000");
        assert_eq!(exporter_address("127.0.0.1", 9), "127.0.0.1:9");
        assert_eq!(exporter_address("::1", 9), "[::1]:9");
    }
}

//! The exporter: a small HTTP/1.1 server of our own (`http.rs`) that
//! answers every scrape with the latest encoded metrics, while the calling
//! thread looks at the machine every interval (the device backend stays on
//! the thread that made it) and waits for SIGINT or SIGTERM in between, to
//! shut down cleanly.

use std::net::TcpListener;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::http::{Limits, Listener};
use super::metrics::{self, Family, Format};
use crate::error::{Error, Result};
use crate::messages;
use crate::os::signals::Blocked;

/// The encoded metrics, both formats, replaced whole after each look.
#[derive(Default)]
pub(crate) struct Published {
    text: String,
    openmetrics: String,
}

impl Published {
    pub(crate) fn from_families(families: Vec<Family>) -> Published {
        Published {
            text: metrics::encode(families.clone(), Format::Text),
            openmetrics: metrics::encode(families, Format::OpenMetrics),
        }
    }

    pub(crate) fn body(&self, format: Format) -> &str {
        match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        }
    }
}

pub(crate) type Shared = Arc<RwLock<Arc<Published>>>;

/// Listens on `host:port`; a port in use is a clear error.
pub(crate) fn bind(host: &str, port: u16) -> Result<Listener> {
    let failed = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            Error::hinted(
                format!("cannot listen on {host}:{port}: the port is already in use"),
                "stop the program using it (another genv monitor?) or choose another port with --port",
            )
        } else {
            Error::hinted(
                format!("cannot listen on {host}:{port}: {e}"),
                "check --host and --port",
            )
        }
    };
    TcpListener::bind((host, port))
        .and_then(Listener::new)
        .map_err(failed)
}

/// How the exporter runs.
pub(crate) struct Options {
    pub interval: Duration,
    /// Said on stderr once the first metrics are ready to serve.
    pub announce: String,
}

/// Looks every interval (`look`: the metric families now) and publishes
/// the metrics until SIGINT or SIGTERM; a look that fails keeps the last
/// metrics and warns (once until looks succeed again).
pub(crate) fn run(
    server: Listener,
    signals: &Blocked,
    options: &Options,
    mut look: impl FnMut() -> Result<Vec<Family>>,
) -> Result<i32> {
    // The first look decides whether there is anything to monitor (a
    // machine without a driver is an error, not an empty exporter).
    let first = look()?;
    messages::note(&options.announce);
    let shared: Shared = Arc::new(RwLock::new(Arc::new(Published::from_families(first))));
    let stopper = server.stopper();
    let thread = {
        let shared = Arc::clone(&shared);
        let limits = Limits::for_this_process();
        std::thread::Builder::new()
            .name("genv-monitor-http".into())
            .spawn(move || server.serve(shared, limits))
            .map_err(|e| Error::new(format!("could not start the HTTP server: {e}")))?
    };
    let mut failing = false;
    let signal = loop {
        if let Some(signal) = signals.wait(options.interval) {
            break signal;
        }
        match look() {
            Ok(families) => {
                let published = Arc::new(Published::from_families(families));
                match shared.write() {
                    Ok(mut guard) => *guard = published,
                    Err(poisoned) => *poisoned.into_inner() = published,
                }
                failing = false;
            }
            Err(e) if !failing => {
                messages::warn(format!(
                    "could not collect the metrics ({e}); serving the last ones"
                ));
                failing = true;
            }
            Err(_) => {}
        }
    };
    stopper.stop();
    let _ = thread.join();
    messages::note(format!("monitor stopped ({})", Blocked::name(signal)));
    Ok(0)
}

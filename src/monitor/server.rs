//! The exporter: a small blocking HTTP server (`tiny_http`) on a thread of
//! its own that answers every scrape with the latest encoded metrics, while
//! the calling thread looks at the machine every interval (the device
//! backend stays on the thread that made it) and waits for SIGINT or
//! SIGTERM in between, to shut down cleanly.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::metrics::{self, Family, Format};
use crate::error::{Error, Result};
use crate::messages;
use crate::signals::Blocked;

/// The encoded metrics, both formats, replaced whole after each look.
#[derive(Default)]
pub struct Published {
    text: String,
    openmetrics: String,
}

impl Published {
    pub fn from_families(families: Vec<Family>) -> Published {
        Published {
            text: metrics::encode(families.clone(), Format::Text),
            openmetrics: metrics::encode(families, Format::OpenMetrics),
        }
    }

    pub fn body(&self, format: Format) -> &str {
        match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
        }
    }
}

pub type Shared = Arc<RwLock<Arc<Published>>>;

/// Listens on `host:port`; a port in use is a clear error.
pub fn bind(host: &str, port: u16) -> Result<tiny_http::Server> {
    tiny_http::Server::http((host, port)).map_err(|e| {
        let in_use = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse);
        if in_use {
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
    })
}

/// Answers scrapes until the server is unblocked: the metrics on every
/// path, as genv 1.4.3's Python client does, in the format asked for.
pub fn answer(server: Arc<tiny_http::Server>, shared: Shared) {
    for request in server.incoming_requests() {
        let accept = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Accept"))
            .map(|h| h.value.as_str().to_owned());
        let format = Format::negotiate(accept.as_deref());
        let published = match shared.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        let response = match request.url() {
            "/favicon.ico" => tiny_http::Response::from_string("").with_status_code(404),
            _ => {
                let mut response = tiny_http::Response::from_string(published.body(format));
                if let Ok(header) =
                    tiny_http::Header::from_bytes("Content-Type", format.content_type())
                {
                    response.add_header(header);
                }
                response
            }
        };
        // A scraper that hung up is not the exporter's problem.
        let _ = request.respond(response);
    }
}

/// How the exporter runs.
pub struct Options {
    pub interval: Duration,
    /// Said on stderr once the first metrics are ready to serve.
    pub announce: String,
}

/// Looks every interval (`look`: the metric families now) and publishes
/// the metrics until SIGINT or SIGTERM; a look that fails keeps the last
/// metrics and warns (once until looks succeed again).
pub fn run(
    server: tiny_http::Server,
    signals: &Blocked,
    options: &Options,
    mut look: impl FnMut() -> Result<Vec<Family>>,
) -> Result<i32> {
    // The first look decides whether there is anything to monitor (a
    // machine without a driver is an error, not an empty exporter).
    let first = look()?;
    messages::note(&options.announce);
    let server = Arc::new(server);
    let shared: Shared = Arc::new(RwLock::new(Arc::new(Published::from_families(first))));
    let thread = {
        let (server, shared) = (Arc::clone(&server), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("genv-monitor-http".into())
            .spawn(move || answer(server, shared))
            .map_err(|e| Error::msg(format!("could not start the HTTP server: {e}")))?
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
    server.unblock();
    let _ = thread.join();
    messages::note(format!("monitor stopped ({})", Blocked::name(signal)));
    Ok(0)
}

//! Monitoring: `genv monitor`'s Prometheus exporter and the files it
//! publishes for Prometheus and Grafana, and the [`Snapshot`] that `genv
//! top` shows too.
//!
//! - `snapshot.rs`: one look at the machine (GPU status, environments,
//!   attachments, processes, device locks, enforcement counts);
//! - `metrics.rs`: the metric families as a pure function of a snapshot,
//!   and their text formats (`prometheus-client`);
//! - `server.rs`: the collection loop and what it publishes;
//! - `http.rs`: the HTTP/1.1 server scrapes reach, bounded per client;
//! - `signals.rs`: SIGINT, SIGTERM and SIGHUP, taken synchronously;
//! - `publish.rs` and `export/`: the Prometheus and Grafana files.

pub(crate) mod http;
pub mod metrics;
pub(crate) mod publish;
pub(crate) mod server;

pub(crate) mod snapshot;

pub use snapshot::{DeviceLocks, Process, Snapshot};

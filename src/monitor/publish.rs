//! The configuration files `genv monitor` publishes for Prometheus and
//! Grafana: real files in `export/`, loaded with `include_str!`, with the
//! exporter's address and the folders filled in. YAML values are written
//! as double-quoted strings, so a path cannot turn into YAML of its own.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state::file::{PUBLISHED_DIR_MODE, PUBLISHED_FILE_MODE};
use crate::state::{Dir, LoadOptions, StateDir};

const PROMETHEUS_YML: &str = include_str!("export/prometheus/prometheus.yml");
const GRAFANA_INI: &str = include_str!("export/grafana/grafana.ini");
const DATASOURCES_YML: &str = include_str!("export/grafana/provisioning/datasources/default.yml");
const DASHBOARDS_YML: &str = include_str!("export/grafana/provisioning/dashboards/default.yml");
/// The dashboard, for tests and checks.
pub(crate) const OVERVIEW_JSON: &str = include_str!("export/grafana/dashboards/overview.json");

/// Where Grafana finds Prometheus, as genv 1.4.3 publishes it.
const PROMETHEUS_URL: &str = "http://localhost:9090";

/// The files for an exporter at `exporter` (`host:port`), as (path under
/// the configuration folder, content).
pub(crate) fn render(config_dir: &Path, exporter: &str) -> Result<Vec<(PathBuf, String)>> {
    let grafana = config_dir.join("grafana");
    let dashboards = grafana.join("dashboards");
    let provisioning = grafana.join("provisioning");
    let overview = dashboards.join("overview.json");
    let yaml = |path: &Path| -> Result<String> {
        Ok(serde_json::Value::String(text(path)?.to_owned()).to_string())
    };
    Ok(vec![
        (
            config_dir.join("prometheus/prometheus.yml"),
            PROMETHEUS_YML.replace(
                "'{exporter_address}'",
                &serde_json::Value::String(exporter.to_owned()).to_string(),
            ),
        ),
        (overview.clone(), OVERVIEW_JSON.to_owned()),
        (
            provisioning.join("datasources/default.yml"),
            DATASOURCES_YML.replace("{prometheus_url}", &format!("\"{PROMETHEUS_URL}\"")),
        ),
        (
            provisioning.join("dashboards/default.yml"),
            DASHBOARDS_YML.replace("{dashboard_dir}", &yaml(&dashboards)?),
        ),
        (
            grafana.join("grafana.ini"),
            GRAFANA_INI
                .replace("{provisioning}", ini(&provisioning)?)
                .replace("{default_home_dashboard_path}", ini(&overview)?),
        ),
    ])
}

fn text(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| {
        Error::hinted(
            format!(
                "the configuration folder {} is not valid UTF-8",
                path.display()
            ),
            "choose another one with --config-dir",
        )
    })
}

/// A path for an INI value: one line, no comment characters to misread.
fn ini(path: &Path) -> Result<&str> {
    let value = text(path)?;
    if value.contains(['\n', '\r', ';', '#']) {
        return Err(Error::hinted(
            format!(
                "the configuration folder {} cannot be written into grafana.ini",
                crate::escape::terminal(value)
            ),
            "choose a folder without newlines, ';' or '#' with --config-dir",
        ));
    }
    Ok(value)
}

/// Writes the files under `config_dir`, as the publisher's own: files
/// 0644 in folders 0755 (as genv 1.4.3 leaves them), for Prometheus and
/// an administrator's Grafana to read and no other user to change. Each
/// folder below `config_dir` is reached through its parent's descriptor
/// and used only when it is a folder of this user that no one else may
/// write into; anything else there (a link, a file, another user's folder
/// with whatever she put in it) is moved aside and a new folder made, and
/// each file is replaced by rename, never written through. The default
/// folder (`metrics` in the shared state folder) is held to the same
/// rule; a `--config-dir` of the user's choosing is followed as given,
/// like `$GENV_TMPDIR`, and created 0755 when missing. Holds the global
/// lock so two monitors starting at once do not trip over each other's
/// temporaries.
pub(crate) fn publish(dir: &StateDir, config_dir: &Path, exporter: &str) -> Result<()> {
    let files = render(config_dir, exporter)?;
    let _lock = dir.transaction(LoadOptions::default())?;
    let root = if config_dir == dir.path("metrics") {
        dir.root_dir()?.own_subdir("metrics")?
    } else {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(PUBLISHED_DIR_MODE)
            .create(config_dir)
            .map_err(|e| Error::io(config_dir, e))?;
        Dir::open_chosen(config_dir)?
    };
    for (path, content) in &files {
        let relative = path.strip_prefix(config_dir).map_err(|_| {
            Error::new(format!(
                "{} is outside {}",
                path.display(),
                config_dir.display()
            ))
        })?;
        let parts: Vec<&str> = relative
            .iter()
            .map(|p| p.to_str().unwrap_or_default())
            .collect();
        let Some((name, folders)) = parts.split_last() else {
            continue;
        };
        let mut folder: Option<Dir> = None;
        for part in folders {
            let next = folder.as_ref().unwrap_or(&root).own_subdir(part)?;
            folder = Some(next);
        }
        folder.as_ref().unwrap_or(&root).write_atomic_mode(
            name,
            content.as_bytes(),
            PUBLISHED_FILE_MODE,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_the_address_and_the_folders() {
        let files = render(Path::new("/var/tmp/genv/metrics"), "localhost:8000").unwrap();
        let get = |name: &str| {
            files
                .iter()
                .find(|(p, _)| p.ends_with(name))
                .map(|(_, c)| c.as_str())
                .unwrap()
        };
        assert!(get("prometheus.yml").contains(r#"- targets: ["localhost:8000"]"#));
        assert!(
            get("dashboards/default.yml")
                .contains(r#"path: "/var/tmp/genv/metrics/grafana/dashboards""#)
        );
        assert!(
            get("grafana.ini")
                .contains("provisioning = /var/tmp/genv/metrics/grafana/provisioning")
        );
        for (_, content) in &files {
            for placeholder in [
                "{exporter_address}",
                "{prometheus_url}",
                "{dashboard_dir}",
                "{provisioning}",
                "{default_home_dashboard_path}",
            ] {
                assert!(!content.contains(placeholder), "{content}");
            }
        }
    }

    #[test]
    fn refuses_folders_that_would_break_the_ini() {
        assert!(render(Path::new("/tmp/a\nb"), "localhost:1").is_err());
        let files = render(Path::new("/tmp/it's \"here\""), "localhost:1").unwrap();
        assert!(
            files[3]
                .1
                .contains(r#"path: "/tmp/it's \"here\"/grafana/dashboards""#)
        );
    }
}

//! `--query-gpu=…` and `--query-compute-apps=…` with
//! `--format=csv[,noheader][,nounits]`, as nvidia-smi prints them.

use super::{SimGpu, SimProcess};

/// The options of `--format=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CsvFormat {
    pub header: bool,
    pub units: bool,
}

impl CsvFormat {
    /// Parses the value of `--format=`; `None` unless it is CSV.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let mut parts = value.split(',').map(str::trim);
        if parts.next()? != "csv" {
            return None;
        }
        let mut format = CsvFormat {
            header: true,
            units: true,
        };
        for part in parts {
            match part {
                "noheader" => format.header = false,
                "nounits" => format.units = false,
                _ => return None,
            }
        }
        Some(format)
    }
}

/// A field's value with its unit (for the header and the values), or none.
struct Value {
    text: String,
    unit: Option<&'static str>,
}

impl Value {
    fn plain(text: impl ToString) -> Self {
        Value {
            text: text.to_string(),
            unit: None,
        }
    }

    fn with(text: impl ToString, unit: &'static str) -> Self {
        Value {
            text: text.to_string(),
            unit: Some(unit),
        }
    }
}

fn gpu_field(field: &str, gpu: &SimGpu, driver: &str, count: usize) -> Option<Value> {
    Some(match field {
        "driver_version" => Value::plain(driver),
        "count" => Value::plain(count),
        "index" => Value::plain(gpu.index),
        "uuid" | "gpu_uuid" => Value::plain(&gpu.uuid),
        "name" | "gpu_name" => Value::plain(&gpu.name),
        "pci.bus_id" | "gpu_bus_id" => Value::plain(format!("00000000:{:02X}:00.0", gpu.index + 1)),
        "memory.total" => Value::with(gpu.total_mib, "MiB"),
        "memory.used" => Value::with(gpu.used_mib, "MiB"),
        "memory.free" => Value::with(gpu.total_mib.saturating_sub(gpu.used_mib), "MiB"),
        "temperature.gpu" => Value::plain(gpu.temperature),
        "utilization.gpu" => Value::with(gpu.utilization, "%"),
        _ => return None,
    })
}

fn process_field(field: &str, process: &SimProcess) -> Option<Value> {
    Some(match field {
        "gpu_uuid" => Value::plain(&process.uuid),
        "gpu_name" => Value::plain(&process.gpu_name),
        "pid" => Value::plain(process.pid),
        "process_name" | "name" => Value::plain(&process.name),
        "used_gpu_memory" | "used_memory" => Value::with(process.used_mib, "MiB"),
        _ => return None,
    })
}

/// What a query prints, or the message nvidia-smi gives for a field it
/// does not know.
pub(crate) fn render_gpus(
    fields: &[&str],
    format: CsvFormat,
    gpus: &[SimGpu],
    driver: &str,
) -> Result<String, String> {
    let probe = SimGpu {
        index: 0,
        uuid: String::new(),
        name: String::new(),
        total_mib: 0,
        used_mib: 0,
        utilization: 0,
        temperature: 0,
    };
    render(
        fields,
        format,
        gpus,
        |field, gpu| gpu_field(field, gpu, driver, gpus.len()),
        &probe,
    )
}

pub(crate) fn render_processes(
    fields: &[&str],
    format: CsvFormat,
    processes: &[SimProcess],
) -> Result<String, String> {
    let probe = SimProcess {
        index: 0,
        uuid: String::new(),
        gpu_name: String::new(),
        pid: 0,
        name: String::new(),
        used_mib: 0,
    };
    render(fields, format, processes, process_field, &probe)
}

fn render<T>(
    fields: &[&str],
    format: CsvFormat,
    items: &[T],
    value: impl Fn(&str, &T) -> Option<Value>,
    probe: &T,
) -> Result<String, String> {
    let mut header = Vec::with_capacity(fields.len());
    for field in fields {
        let Some(v) = value(field, probe) else {
            return Err(format!("Field \"{field}\" is not a valid field to query."));
        };
        header.push(match (v.unit, format.units) {
            (Some(unit), true) => format!("{field} [{unit}]"),
            _ => (*field).to_owned(),
        });
    }
    let mut out = String::new();
    if format.header {
        out.push_str(&header.join(", "));
        out.push('\n');
    }
    for item in items {
        let row: Vec<String> = fields
            .iter()
            .filter_map(|field| value(field, item))
            .map(|v| match (v.unit, format.units) {
                (Some(unit), true) => format!("{} {unit}", v.text),
                _ => v.text,
            })
            .collect();
        out.push_str(&row.join(", "));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu() -> SimGpu {
        SimGpu {
            index: 1,
            uuid: "GPU-1".into(),
            name: "Tesla, V100".into(),
            total_mib: 16384,
            used_mib: 10,
            utilization: 93,
            temperature: 38,
        }
    }

    #[test]
    fn formats() {
        assert_eq!(
            CsvFormat::parse("csv,noheader,nounits"),
            Some(CsvFormat {
                header: false,
                units: false
            })
        );
        assert_eq!(CsvFormat::parse("json"), None);
        assert_eq!(CsvFormat::parse("csv,bogus"), None);
    }

    #[test]
    fn gpus_with_and_without_units() {
        let fields = ["index", "memory.total", "utilization.gpu", "name"];
        let with = render_gpus(&fields, CsvFormat::parse("csv").unwrap(), &[gpu()], "550").unwrap();
        assert_eq!(
            with,
            "index, memory.total [MiB], utilization.gpu [%], name\n1, 16384 MiB, 93 %, Tesla, V100\n"
        );
        let without = render_gpus(
            &fields,
            CsvFormat::parse("csv,noheader,nounits").unwrap(),
            &[gpu()],
            "550",
        )
        .unwrap();
        assert_eq!(without, "1, 16384, 93, Tesla, V100\n");
        assert!(
            render_gpus(
                &["bogus"],
                CsvFormat::parse("csv").unwrap(),
                &[gpu()],
                "550"
            )
            .is_err()
        );
    }
}

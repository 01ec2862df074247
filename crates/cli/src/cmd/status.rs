//! `pipegate status`: every instance record, probed, as a table or JSON.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use pipegate_discovery::{inspect, Registry, State};
use serde_json::{json, Value};

use crate::cli::StatusArgs;

/// One line of output.
struct Row {
    name: String,
    /// `running`, `unhealthy`, `stale`, `not_found` or `error` (unreadable record).
    state: String,
    json: Value,
    table: [String; 7],
    note: Option<String>,
}

pub(crate) async fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::from_env().context("cannot find the discovery directory")?;
    if args.prune {
        let removed = registry
            .prune(args.timeout)
            .await
            .context("cannot prune stale records")?;
        for name in &removed {
            eprintln!("pipegate: removed the stale record of {name:?}");
        }
    }
    let entries = registry
        .list()
        .with_context(|| format!("cannot list {}", registry.dir().display()))?;
    let mut rows = Vec::new();
    for entry in entries {
        if args.name.as_ref().is_some_and(|n| *n != entry.name) {
            continue;
        }
        let path = entry.path.display().to_string();
        let row = match entry.record {
            Err(e) => Row {
                name: entry.name.clone(),
                state: "error".into(),
                json: json!({ "name": entry.name, "state": "error", "path": path,
                               "error": format!("{:#}", anyhow::Error::new(e)) }),
                table: [
                    entry.name.clone(),
                    "error".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
                note: Some(format!("unreadable record {path}")),
            },
            Ok(record) => {
                let status = inspect(&record, args.timeout).await;
                let uptime = record.uptime();
                let reason = status
                    .reason
                    .map(|e| format!("{:#}", anyhow::Error::new(e)));
                let upstream = record.upstream.as_ref().map(ToString::to_string);
                let more = record.listeners.len().saturating_sub(1);
                let endpoint = if more > 0 {
                    format!("{} (+{more})", record.url)
                } else {
                    record.url.to_string()
                };
                Row {
                    name: entry.name.clone(),
                    state: status.state.as_str().into(),
                    json: json!({
                        "name": entry.name,
                        "state": status.state.as_str(),
                        "url": record.url.to_string(),
                        "listeners": record.listeners.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "mode": record.mode.as_str(),
                        "upstream": upstream,
                        "pid": record.pid,
                        "started_at": record.started_at_rfc3339(),
                        "uptime_seconds": uptime.as_secs(),
                        "reason": reason,
                        "path": path,
                    }),
                    table: [
                        entry.name,
                        status.state.as_str().into(),
                        record.pid.to_string(),
                        human(uptime),
                        record.mode.as_str().into(),
                        endpoint,
                        upstream.unwrap_or_else(|| "-".into()),
                    ],
                    note: reason,
                }
            }
        };
        rows.push(row);
    }
    if let Some(name) = &args.name {
        if rows.is_empty() {
            rows.push(Row {
                name: name.clone(),
                state: State::NotFound.as_str().into(),
                json: json!({ "name": name, "state": State::NotFound.as_str() }),
                table: [
                    name.clone(),
                    State::NotFound.as_str().into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ],
                note: None,
            });
        }
    }
    print(&args, &registry, &rows)
}

fn print(args: &StatusArgs, registry: &Registry, rows: &[Row]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        let all: Vec<&Value> = rows.iter().map(|r| &r.json).collect();
        serde_json::to_writer_pretty(&mut out, &all)
            // Keeps the kind of an I/O error (a reader gone is BrokenPipe).
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else if rows.is_empty() {
        writeln!(
            out,
            "no pipegate instances (no records in {})",
            registry.dir().display()
        )
    } else {
        table(&mut out, rows)
    };
    crate::report::stdout_written(written)?;
    Ok(ExitCode::SUCCESS)
}

fn table(out: &mut impl std::io::Write, rows: &[Row]) -> std::io::Result<()> {
    const HEADERS: [&str; 7] = [
        "NAME", "STATE", "PID", "UPTIME", "MODE", "ENDPOINT", "UPSTREAM",
    ];
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(&row.table) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text
    };
    writeln!(out, "{}", line(HEADERS))?;
    for row in rows {
        writeln!(out, "{}", line(row.table.each_ref().map(String::as_str)))?;
        if row.state != State::Running.as_str() {
            if let Some(note) = &row.note {
                writeln!(out, "  {}: {note}", row.name)?;
            }
        }
    }
    Ok(())
}

/// `3d4h`, `5h12m`, `4m3s`, `12s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptimes() {
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(243)), "4m3s");
        assert_eq!(human(Duration::from_secs(5 * 3600 + 12 * 60 + 9)), "5h12m");
        assert_eq!(
            human(Duration::from_secs(3 * 86_400 + 4 * 3600 + 1)),
            "3d4h"
        );
    }
}

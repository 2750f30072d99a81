//! `kvs plugins list` and `kvs plugins check`, and writing to a stdout that may close.

use std::path::Path;

use anyhow::Result;
use kvs_host::config::Config;
use kvs_host::plugins::Catalog;
use kvs_plugin_api::{API_MAJOR, API_MINOR};

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
pub(crate) fn print_all(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

pub(crate) fn check_plugin(file: &Path, table: &str) -> Result<()> {
    // "checking" first, on its own: the checks take a while.
    print_all(format!("checking {}\n", file.display()).as_bytes())?;
    let outcomes = crate::check::run(file, table);
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    let mut out = String::new();
    for o in &outcomes {
        out += &match &o.result {
            Ok(()) if o.skipped => format!("  SKIP  {}\n", o.name),
            Ok(()) => format!("  PASS  {}\n", o.name),
            Err(why) => format!("  FAIL  {}: {why}\n", o.name),
        };
    }
    if failed == 0 {
        out += &format!("all {} checks passed\n", outcomes.len());
    }
    print_all(out.as_bytes())?;
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", outcomes.len());
    }
    Ok(())
}

pub(crate) fn list_plugins(config: &Config) -> Result<()> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let catalog = Catalog::scan_with(&config.plugins_dir, config.plugins_insecure_modes)?;
    writeln!(
        out,
        "plugins in {} (this kvs speaks plugin-api {API_MAJOR}.{API_MINOR})",
        catalog.dir.display()
    )?;
    if catalog.plugins.is_empty() {
        writeln!(out, "  (no usable plug-ins)")?;
    } else {
        let rows: Vec<[String; 6]> = catalog
            .plugins
            .iter()
            .map(|p| {
                [
                    p.kind.to_string(),
                    p.name.clone(),
                    p.format.to_string(),
                    p.version.clone(),
                    format!("{}.{}", p.api.0, p.api.1),
                    p.path.display().to_string(),
                ]
            })
            .collect();
        let header = ["KIND", "NAME", "FORMAT", "VERSION", "API", "PATH"].map(String::from);
        let mut widths = [0usize; 6];
        for row in std::iter::once(&header).chain(&rows) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.len());
            }
        }
        for row in std::iter::once(&header).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(out, "  {}", cells.join("  ").trim_end())?;
        }
        for p in &catalog.plugins {
            writeln!(out, "  {} {}: {}", p.kind, p.name, p.description)?;
        }
    }
    for ((kind, name), paths) in catalog.duplicates() {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            out,
            "duplicate: {} files declare the {kind} plug-in {name:?}: {}",
            paths.len(),
            paths.join(" and ")
        )?;
    }
    if !catalog.refused.is_empty() {
        writeln!(out, "refused:")?;
        for r in &catalog.refused {
            writeln!(out, "  {}: {}", r.path.display(), r.reason)?;
        }
    }
    print_all(out.as_bytes())
}

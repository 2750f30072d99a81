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

pub(crate) fn check_plugin(
    file: &Path,
    table: &str,
    exchange: Option<&crate::check::Exchange>,
) -> Result<()> {
    // "checking" first, on its own: the checks take a while.
    print_all(format!("checking {}\n", file.display()).as_bytes())?;
    let outcomes = crate::check::run(file, table, exchange);
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
        let rows: Vec<[String; 7]> = catalog
            .plugins
            .iter()
            .map(|p| {
                [
                    p.kind.to_string(),
                    p.name.clone(),
                    p.format.to_string(),
                    p.version.clone(),
                    format!("{}.{}", p.api.0, p.api.1),
                    p.hash[..12].to_string(),
                    p.path.display().to_string(),
                ]
            })
            .collect();
        let header =
            ["KIND", "NAME", "FORMAT", "VERSION", "API", "SHA256", "PATH"].map(String::from);
        let mut widths = [0usize; 7];
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
    in_use(config, &mut out)?;
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

/// What the kvs running with this config (its admin listener) has loaded, and whether
/// a different file now waits for `kvs reload`. Nothing if no kvs answers there.
fn in_use(config: &Config, out: &mut String) -> Result<()> {
    use std::fmt::Write as _;
    #[derive(serde::Deserialize)]
    struct InUse {
        role: String,
        name: String,
        version: String,
        sha256: String,
        waiting: Option<String>,
    }
    let Some(admin) = &config.admin else {
        return Ok(());
    };
    let url = format!("http://{}/plugins", admin.listen);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(1)))
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Ok(token) = std::env::var("KVS_TOKEN") {
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let Ok(mut response) = request.call() else {
        return Ok(());
    };
    let Ok(body) = response.body_mut().read_to_string() else {
        return Ok(());
    };
    let Ok(list) = serde_json::from_str::<Vec<InUse>>(&body) else {
        return Ok(());
    };
    writeln!(out, "in use by the kvs at {url}:")?;
    for p in list {
        let waiting = match p.waiting.as_deref() {
            None => String::new(),
            Some("missing") => "; its file is gone".into(),
            Some(hash) => format!(
                "; a different file is waiting (sha256 {}): `kvs reload` swaps it in",
                &hash[..hash.len().min(12)]
            ),
        };
        writeln!(
            out,
            "  {} {} {} sha256 {}{waiting}",
            p.role,
            p.name,
            p.version,
            &p.sha256[..p.sha256.len().min(12)]
        )?;
    }
    Ok(())
}

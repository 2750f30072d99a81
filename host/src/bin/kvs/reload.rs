//! `kvs reload`: asks a running kvs to re-read its config file and plugins directory
//! (`POST /reload` on its admin listener) and prints what changed, what was kept and
//! what was refused, one line each.

use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The admin listener's answer.
#[derive(serde::Deserialize)]
struct Report {
    changed: Vec<String>,
    kept: Vec<String>,
    refused: Vec<String>,
}

/// Calls `POST {admin}/reload` and prints the report; an error if anything was refused.
pub fn run(admin: &str) -> Result<()> {
    let url = format!("{}/reload", admin.trim_end_matches('/'));
    // A reload waits for frontends to drain and the logger to swap: minutes at worst.
    post_and_print(&url, Duration::from_secs(600))
}

/// POSTs to `url` on the admin listener (`/reload`, `/migrate`) and prints the report it
/// answers, one line each; an error if anything was refused.
pub fn post_and_print(url: &str, timeout: Duration) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.post(url);
    // With `[auth]` on, reloading needs a caller with a role, as /plugins does; a
    // migration one that may read and write every key.
    if let Ok(token) = std::env::var("KVS_TOKEN") {
        request = request.header("authorization", format!("Bearer {}", token.trim()));
    }
    let mut response = request
        .send_empty()
        .with_context(|| format!("cannot reach {url}: is kvs running with [admin] listen set?"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer of {url}"))?;
    let Ok(report) = serde_json::from_str::<Report>(&body) else {
        bail!("{url} answered {status}: {}", body.trim());
    };
    for line in &report.changed {
        say!("changed: {line}");
    }
    for line in &report.kept {
        say!("kept: {line}");
    }
    for line in &report.refused {
        say!("refused: {line}");
    }
    if !report.refused.is_empty() {
        let rest = if report.changed.is_empty() {
            "nothing was changed"
        } else {
            "the changes listed above were applied"
        };
        bail!(
            "{} item(s) refused (see above); {rest}",
            report.refused.len()
        );
    }
    Ok(())
}

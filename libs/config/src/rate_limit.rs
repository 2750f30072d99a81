//! `[rate_limit]`: per-client rate limits (the host's `rate_limit` module applies them).

use serde::Deserialize;

/// Bounds of `per_client` (besides 0) and `burst`: beyond them the numbers stop
/// meaning anything (a wait of centuries, a token lost in a float's rounding).
const MIN_RATE: f64 = 0.001;
const MAX_RATE: f64 = 1e9;
const MAX_BURST: u64 = 1_000_000_000;

/// `[rate_limit]` as written: off unless `per_client` is set.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Store operations a second one client may make (0: no limit; the default).
    #[serde(default)]
    pub per_client: f64,
    /// How many it may make at once after a quiet spell (default: one second's worth,
    /// at least 1).
    #[serde(default)]
    pub burst: Option<u64>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            per_client: 0.0,
            burst: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks the values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let rate = self.per_client;
        if rate != 0.0 && !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(format!(
                "[rate_limit] per_client = {rate}: operations a second, 0 (no limit) or \
                 from {MIN_RATE} to {MAX_RATE}"
            ));
        }
        match self.burst {
            Some(_) if rate == 0.0 => Err("[rate_limit] burst is set but per_client is not: \
                                           set per_client (operations a second) too"
                .into()),
            Some(burst) if burst == 0 || burst > MAX_BURST => Err(format!(
                "[rate_limit] burst = {burst}: from 1 to {MAX_BURST} (or leave it out: one \
                 second's worth)"
            )),
            _ => Ok(()),
        }
    }

    /// For a report: `per_client 5, burst 10` or `off`.
    pub fn describe(&self) -> String {
        if self.per_client == 0.0 {
            "off".into()
        } else {
            format!(
                "per_client {}, burst {}",
                self.per_client,
                self.burst_or_default()
            )
        }
    }

    /// `burst`, or one second's worth (at least 1) when it is not set.
    pub fn burst_or_default(&self) -> f64 {
        self.burst
            .map_or(self.per_client.ceil().max(1.0), |b| b as f64)
    }
}

//! `kvs_log`: a guest's log records become host events, like a native plug-in's,
//! within a per-plug-in rate ([`LogGate`]).

use std::time::Instant;

use extism::{CurrentPlugin, UserData, Val};
use kvs_plugin_api::wire;

/// `kvs_log`'s limits and state for one plug-in, shared by all its instances (extism's
/// `UserData` is one `Arc` across them): at most `lines_per_sec` lines pass in each
/// one-second window, the rest are dropped and counted, and the count is logged with
/// the first line that passes after them; a line longer than `line_max_bytes` is cut.
pub(in crate::wasm) struct LogGate {
    name: String,
    lines_per_sec: u32,
    line_max_bytes: usize,
    window: Instant,
    passed: u32,
    dropped: u64,
}

impl LogGate {
    pub(in crate::wasm) fn new(name: &str, lines_per_sec: u32, line_max_bytes: usize) -> LogGate {
        LogGate {
            name: name.to_string(),
            lines_per_sec,
            line_max_bytes,
            window: Instant::now(),
            passed: 0,
            dropped: 0,
        }
    }

    /// Whether a line may pass at `now`, and how many were dropped before it (to be
    /// reported first).
    fn admit(&mut self, now: Instant) -> (bool, u64) {
        if now.duration_since(self.window) >= std::time::Duration::from_secs(1) {
            self.window = now;
            self.passed = 0;
        }
        if self.passed < self.lines_per_sec {
            self.passed += 1;
            (true, std::mem::take(&mut self.dropped))
        } else {
            self.dropped += 1;
            (false, 0)
        }
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), saying how much was cut.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let end = s.floor_char_boundary(max);
    format!("{} [{} bytes cut]", &s[..end], s.len() - end).into()
}

/// `kvs_log`: a guest's log message, emitted like a native plug-in's, within the
/// plug-in's [`LogGate`].
pub(in crate::wasm) fn host_log(
    plugin: &mut CurrentPlugin,
    inputs: &[Val],
    _outputs: &mut [Val],
    gate: UserData<LogGate>,
) -> Result<(), extism::Error> {
    emit_log(&gate, || plugin.memory_get_val(&inputs[0]))
}

/// A guest's log record, read by `read` only if the plug-in's [`LogGate`] lets it pass.
pub(in crate::wasm) fn emit_log(
    gate: &UserData<LogGate>,
    read: impl FnOnce() -> Result<Vec<u8>, extism::Error>,
) -> Result<(), extism::Error> {
    let gate = gate.get()?;
    let (name, max) = {
        let mut gate = gate.lock().unwrap();
        let (pass, dropped) = gate.admit(Instant::now());
        if dropped > 0 {
            tracing::warn!(
                plugin = gate.name,
                dropped,
                "{dropped} guest log line(s) dropped: over log_lines_per_sec = {}",
                gate.lines_per_sec
            );
        }
        if !pass {
            return Ok(()); // not even read from the guest's memory
        }
        (gate.name.clone(), gate.line_max_bytes)
    };
    let input = read()?;
    match wire::LogRecord::decode(&input) {
        Ok(r) => {
            let message = cut(&r.message, max);
            let fields: Vec<String> = r.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let fields = fields.join(" ");
            let fields = cut(&fields, max.saturating_sub(message.len()));
            let target = cut(&r.target, 128);
            crate::native::plugin_event(&name, r.level, &target, &message, &fields);
        }
        Err(e) => tracing::warn!(plugin = name, "malformed kvs_log message: {e}"),
    }
    Ok(())
}

//! A [`RequestContext`] on the wire (1.1): after an HTTP request, in a stream's open.

use super::{Reader, WireError, Writer};
use crate::context::RequestContext;

/// Appends a [`RequestContext`] (1.1).
pub fn encode_context(w: &mut Writer, ctx: &RequestContext) {
    w.opt_str(&ctx.bearer_token)
        .opt_str(&ctx.client_identity)
        .opt_str(&ctx.traceparent)
        .opt_str(&ctx.tracestate);
    match ctx.deadline {
        None => w.u8(0),
        Some(d) => w
            .u8(1)
            .u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    };
    w.opt_str(&ctx.peer);
}

/// Reads a [`RequestContext`] (1.1).
pub fn decode_context(r: &mut Reader<'_>) -> Result<RequestContext, WireError> {
    Ok(RequestContext {
        bearer_token: r.opt_str()?,
        client_identity: r.opt_str()?,
        traceparent: r.opt_str()?,
        tracestate: r.opt_str()?,
        deadline: match r.u8()? {
            0 => None,
            _ => Some(std::time::Duration::from_millis(r.u64()?)),
        },
        peer: r.opt_str()?,
    })
}

//! Direct calls (1.4): how a guest built with this crate talks to a 1.4 host.
//!
//! Before 1.4 every call's input and output, and every host function's argument and
//! result, went through Extism's kernel memory, 8 bytes per kernel call each way. From
//! 1.4 both directions use the guest's own memory (see [`wasm_abi`](crate::wasm_abi)):
//!
//! * the host writes an export's input into a buffer the guest lends it (`kvs_buffer`)
//!   and calls `kvs_dispatch(export, len)`; the guest answers with where its result
//!   frame lies in its memory, which the host reads in place;
//! * the guest calls the host function `kvs_call(op, in, in_len, out, out_cap)`; the
//!   host reads the input in place and writes the result frame into `out` (or, if it
//!   does not fit, holds it for `kvs_call_result`).
//!
//! The bytes are the same [`wire`](crate::wire) frames as before; only where they lie
//! changed. The Extism-form exports stay too (every 1.x host may call them).

use std::cell::RefCell;

use super::GuestError;
use crate::ErrorCode;
use crate::wasm_abi::{self, GUEST_EXPORTS, GuestExport};
use crate::wire;

#[link(wasm_import_module = "extism:host/user")]
unsafe extern "C" {
    #[link_name = "kvs_call"]
    fn host_kvs_call(op: u32, input: *const u8, input_len: u32, out: *mut u8, out_cap: u32) -> i32;
    #[link_name = "kvs_call_result"]
    fn host_kvs_call_result(out: *mut u8, out_cap: u32) -> i32;
}

/// How many bytes a host call's result buffer starts with: most results (a value, an
/// acknowledgement) fit, larger ones cost a second host call.
const RESULT_BYTES: usize = 1024;

std::thread_local! {
    /// The buffer the host writes an export's input into (`kvs_buffer`).
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The last export's result frame, which the host reads after the export returns;
    /// its buffer is reused by the next export.
    static OUTPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A host call's input, encoded here (reused: no allocation per call).
    static ARGS: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A host call's result frame, written here by the host (reused likewise).
    static REPLY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `kvs_buffer`: the address of a buffer of at least `len` bytes for the next input. It
/// stays where it is until the next `kvs_buffer` call.
#[doc(hidden)]
pub fn buffer(len: u32) -> u32 {
    INPUT.with_borrow_mut(|input| {
        let len = len as usize;
        if input.len() < len {
            input.resize(len, 0);
        }
        input.as_mut_ptr() as usize as u32
    })
}

/// `kvs_dispatch`: runs the export at position `export` of
/// [`GUEST_EXPORTS`] on the first `len` bytes of the input buffer, and answers where its
/// result frame lies: its address in the high 32 bits, its length in the low 32.
/// `run` is the plug-in's dispatcher (the export macros write it): `None` for an export
/// this plug-in does not have.
///
/// `run` writes the export's result frame into the (empty) buffer it is given and returns
/// `true`, or returns `false` for an export this plug-in does not have. The export macros
/// write it.
#[doc(hidden)]
pub fn dispatch(
    export: u32,
    len: u32,
    run: impl FnOnce(&GuestExport, &[u8], &mut Vec<u8>) -> bool,
) -> u64 {
    OUTPUT.with_borrow_mut(|output| {
        output.clear();
        INPUT.with_borrow(|input| {
            let Some(input) = input.get(..len as usize) else {
                *output = wire::err(
                    ErrorCode::INVALID_INPUT,
                    "input longer than kvs_buffer lent",
                );
                return;
            };
            let Some(e) = GUEST_EXPORTS.get(export as usize) else {
                *output = wire::err(ErrorCode::INVALID_INPUT, &format!("no export {export}"));
                return;
            };
            if !run(e, input, output) {
                *output = wire::err(
                    ErrorCode::INVALID_INPUT,
                    &format!("this plug-in has no {} export", e.name),
                );
            }
        });
        ((output.as_ptr() as usize as u64) << 32) | output.len() as u64
    })
}

const fn must(op: Option<u32>) -> u32 {
    match op {
        Some(op) => op,
        None => panic!("a host function missing from wasm_abi::HOST_FUNCTIONS"),
    }
}

/// The ops of the host functions this library calls.
pub(super) const GET: u32 = must(wasm_abi::op(&wasm_abi::KVS_GET));
pub(super) const PUT: u32 = must(wasm_abi::op(&wasm_abi::KVS_PUT));
pub(super) const DELETE: u32 = must(wasm_abi::op(&wasm_abi::KVS_DELETE));
pub(super) const LOG: u32 = must(wasm_abi::op(&wasm_abi::KVS_LOG));
pub(super) const STATS: u32 = must(wasm_abi::op(&wasm_abi::KVS_STATS));
pub(super) const CHECK: u32 = must(wasm_abi::op(&wasm_abi::KVS_CHECK));
pub(super) const UPDATE: u32 = must(wasm_abi::op(&wasm_abi::KVS_UPDATE));
pub(super) const GET_ENTRY: u32 = must(wasm_abi::op(&wasm_abi::KVS_GET_ENTRY));

/// Calls the host function at position `op` of
/// [`HOST_FUNCTIONS`](wasm_abi::HOST_FUNCTIONS) through `kvs_call`, with the input
/// `args` writes, and hands its result's payload to `read`; the host's error otherwise.
/// Both buffers are reused from call to call. They are taken out of their
/// thread-locals for the call, so `read` — a guest's own closure in `get_with` — may
/// call the host again (a nested call finds them empty and allocates its own).
pub(super) fn call_host<T>(
    op: u32,
    args: impl FnOnce(&mut wire::Writer),
    read: impl FnOnce(&[u8]) -> Result<T, wire::WireError>,
) -> Result<T, GuestError> {
    let mut w = wire::Writer(ARGS.take());
    w.0.clear();
    args(&mut w);
    let mut out = REPLY.take();
    let result = call_into(op, &w.0, &mut out, read);
    ARGS.set(w.0);
    REPLY.set(out);
    result
}

/// `kvs_call` with `input`, its result frame written into `out`, its payload handed to
/// `read`.
fn call_into<T>(
    op: u32,
    input: &[u8],
    out: &mut Vec<u8>,
    read: impl FnOnce(&[u8]) -> Result<T, wire::WireError>,
) -> Result<T, GuestError> {
    if out.capacity() < RESULT_BYTES {
        out.reserve_exact(RESULT_BYTES);
    }
    out.clear();
    // SAFETY: the host reads `input` and writes at most `out_cap` bytes at `out`.
    let n = unsafe {
        host_kvs_call(
            op,
            input.as_ptr(),
            input.len() as u32,
            out.as_mut_ptr(),
            out.capacity() as u32,
        )
    };
    let mut n = usize::try_from(n).map_err(|_| GuestError::internal("kvs_call refused"))?;
    if n > out.capacity() {
        out.reserve_exact(n);
        // SAFETY: as above; the host copies the result it held.
        let m = unsafe { host_kvs_call_result(out.as_mut_ptr(), out.capacity() as u32) };
        n = usize::try_from(m).map_err(|_| GuestError::internal("kvs_call_result refused"))?;
    }
    // SAFETY: the host wrote `n` (<= capacity) bytes.
    unsafe { out.set_len(n.min(out.capacity())) };
    match wire::result(out).map_err(|e| GuestError::internal(e.to_string()))? {
        Ok(payload) => read(payload).map_err(|e| GuestError::internal(e.to_string())),
        Err((code, message)) => Err(GuestError { code, message }),
    }
}

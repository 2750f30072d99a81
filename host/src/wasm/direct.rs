//! Direct calls (WASM ABI 1.4, `kvs_plugin_api::wasm_abi`): a call's input, output and
//! host-call data in the guest's own memory instead of Extism's kernel memory.
//!
//! * [`Instance`]: a guest instance and, if it exports `kvs_buffer` and `kvs_dispatch`,
//!   where its input buffer is; [`Instance::call`] writes the input there, calls
//!   `kvs_dispatch` and reads the result frame in place. Other guests are called
//!   through Extism's memory, as before.
//! * [`direct_call`]: the host functions `kvs_call` (run host function `op` on input
//!   read from the guest's memory, write its result frame back) and `kvs_call_result`
//!   (a result that did not fit the guest's buffer, held until asked for).

use std::cell::Cell;

use extism::{CurrentPlugin, Function, Plugin, UserData, ValType};
use kvs_plugin_api::ErrorCode;
use kvs_plugin_api::wasm_abi::{self, KVS_BUFFER, KVS_CALL, KVS_CALL_RESULT, KVS_DISPATCH};
use kvs_plugin_api::wire;

use super::host_fns::{HostOp, LogGate, StoreRef, emit_log, excuse, store_reply, take_store_waits};

/// A guest instance, called directly if it can be.
pub(super) struct Instance {
    pub(super) plugin: Plugin,
    /// `Some` for a guest with `kvs_buffer` and `kvs_dispatch`.
    direct: Option<Buffer>,
}

/// The input buffer a guest lent (`kvs_buffer`): unknown until the first call.
#[derive(Default, Clone, Copy)]
struct Buffer {
    address: u32,
    capacity: u32,
}

impl Instance {
    pub(super) fn new(plugin: Plugin) -> Instance {
        let has = |e: &wasm_abi::GuestExport| {
            let want = |ts: &[wasm_abi::ValType]| ts.iter().map(|t| val_type(*t)).collect();
            plugin.export_type(e.name) == Some((want(e.params), want(e.results)))
        };
        let direct = (has(&KVS_BUFFER) && has(&KVS_DISPATCH)).then(Buffer::default);
        Instance { plugin, direct }
    }

    /// Whether the guest has export `name` in its Extism form (which decides whether an
    /// optional export is called, direct or not).
    pub(super) fn function_exists(&self, name: &str) -> bool {
        self.plugin.function_exists(name)
    }

    /// Calls export `func` with `input`: its result frame, still framed. A result held
    /// for `kvs_call_result` lives only within the call: one the guest did not collect
    /// (it trapped first, say) must not reach the next guest call on this thread, which
    /// may be another instance serving another client. Nor does store-wait time not yet
    /// excused (`host_fns::take_store_waits`).
    pub(super) fn call(&mut self, func: &str, input: &[u8]) -> Result<Vec<u8>, extism::Error> {
        HELD.set(None);
        take_store_waits();
        let result = self.call_guest(func, input);
        HELD.set(None);
        take_store_waits();
        result
    }

    fn call_guest(&mut self, func: &str, input: &[u8]) -> Result<Vec<u8>, extism::Error> {
        let (Some(buffer), Some(export)) = (self.direct, wasm_abi::export_index(func)) else {
            return self.plugin.call::<&[u8], Vec<u8>>(func, input);
        };
        let len = u32::try_from(input.len())
            .ok()
            .filter(|&l| l <= i32::MAX as u32)
            .ok_or_else(|| extism::Error::msg("input larger than 2 GiB"))?;
        let buffer = if buffer.address == 0 || len > buffer.capacity {
            let address: i32 = self.plugin.call_typed(KVS_BUFFER.name, len as i32)?;
            if address == 0 {
                return Err(extism::Error::msg(format!(
                    "kvs_buffer lent no buffer of {len} bytes"
                )));
            }
            let lent = Buffer {
                address: address as u32,
                capacity: len,
            };
            self.direct = Some(lent);
            lent
        } else {
            buffer
        };
        let memory = self.guest_memory()?;
        let start = buffer.address as usize;
        memory
            .get_mut(start..start + input.len())
            .ok_or_else(|| extism::Error::msg("kvs_buffer lent a buffer outside its memory"))?
            .copy_from_slice(input);
        let packed: i64 = self
            .plugin
            .call_typed(KVS_DISPATCH.name, (export as i32, len as i32))?;
        let (at, n) = (
            (packed as u64 >> 32) as usize,
            packed as u64 as u32 as usize,
        );
        let memory = self.guest_memory()?;
        Ok(memory
            .get(at..at + n)
            .ok_or_else(|| extism::Error::msg("kvs_dispatch answered outside its memory"))?
            .to_vec())
    }

    fn guest_memory(&mut self) -> Result<&mut [u8], extism::Error> {
        self.plugin
            .guest_memory()
            .ok_or_else(|| extism::Error::msg("the module exports no memory"))
    }
}

pub(super) fn val_type(t: wasm_abi::ValType) -> ValType {
    match t {
        wasm_abi::ValType::I32 => ValType::I32,
        wasm_abi::ValType::I64 => ValType::I64,
        wasm_abi::ValType::F32 => ValType::F32,
        wasm_abi::ValType::F64 => ValType::F64,
    }
}

thread_local! {
    /// A `kvs_call` result larger than the guest's buffer, until `kvs_call_result`, the
    /// guest's next `kvs_call`, or the end of the guest call ([`Instance::call`]). A
    /// guest call runs start to end on one thread.
    static HELD: Cell<Option<Vec<u8>>> = const { Cell::new(None) };
    /// The buffer `kvs_call` frames its results in, kept between calls.
    static REPLY: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// The largest reply buffer a thread keeps for its next `kvs_call` (one that held a
/// large value is dropped rather than kept for the thread's life).
const KEEP_REPLY_BYTES: usize = 64 << 10;

/// The host functions of direct calls, `kvs_call` and `kvs_call_result`, reaching
/// `store` and logging through `gate`. Both take and return only `i32`s, so they are
/// linked in extism's raw `i32` form (`Function::new_i32`, vendor/extism/KVS-PATCH.md
/// round 6): a guest making a host call per command (wasm-resp) spends about a tenth
/// of its time in the conversions the general form makes.
pub(super) fn direct_functions(store: StoreRef, gate: UserData<LogGate>) -> Vec<Function> {
    let call = Function::new_i32(
        KVS_CALL.name,
        KVS_CALL.params.len(),
        move |plugin: &mut CurrentPlugin, args: &[i32]| {
            let (op, at, len, out, cap) = (args[0], args[1], args[2], args[3], args[4]);
            HELD.set(None);
            // One look-up of the guest's memory for the whole call: nothing below runs
            // guest code, so it cannot grow meanwhile.
            let memory = guest_memory(plugin)?;
            let input = slice(memory, at, len)?;
            // The thread's reply buffer, taken (not borrowed) so nothing the call does
            // can find it in use.
            let mut reply = REPLY.take();
            match HostOp::from_op(op) {
                Some(HostOp::Log) => {
                    emit_log(&gate, || Ok(input.to_vec()))?;
                    reply.clear();
                    reply.extend_from_slice(&wire::ok(&[]));
                }
                Some(HostOp::Store(call)) => store_reply(&store, call, input, &mut reply),
                None => {
                    reply.clear();
                    reply.extend_from_slice(&wire::err(
                        ErrorCode::INVALID_INPUT,
                        &format!("kvs_call: no host function has op {op}"),
                    ));
                }
            };
            let waited = take_store_waits();
            let n = reply.len() as i32;
            if reply.len() <= cap.max(0) as usize {
                slice_mut(memory, out, n)?.copy_from_slice(&reply);
                if reply.capacity() <= KEEP_REPLY_BYTES {
                    REPLY.set(reply);
                }
            } else {
                HELD.set(Some(reply));
            }
            excuse(plugin, waited);
            Ok(n)
        },
    );
    let result = Function::new_i32(
        KVS_CALL_RESULT.name,
        KVS_CALL_RESULT.params.len(),
        |plugin: &mut CurrentPlugin, args: &[i32]| {
            let (out, cap) = (args[0], args[1]);
            let Some(reply) = HELD.take() else {
                return Ok(-1);
            };
            if reply.len() > cap.max(0) as usize {
                HELD.set(Some(reply));
                return Ok(-1);
            }
            let memory = guest_memory(plugin)?;
            slice_mut(memory, out, reply.len() as i32)?.copy_from_slice(&reply);
            Ok(reply.len() as i32)
        },
    );
    vec![call, result]
}

fn guest_memory(plugin: &mut CurrentPlugin) -> Result<&mut [u8], extism::Error> {
    plugin
        .guest_memory()
        .ok_or_else(|| extism::Error::msg("kvs_call: the module exports no memory"))
}

/// `len` bytes at `at` of the guest's memory; a range outside it fails the call (the
/// guest is broken or hostile: its instance is dropped).
fn slice(memory: &[u8], at: i32, len: i32) -> Result<&[u8], extism::Error> {
    let (at, len) = (at as u32 as usize, len as u32 as usize);
    memory
        .get(at..at.saturating_add(len))
        .ok_or_else(|| extism::Error::msg("kvs_call: a range outside the guest's memory"))
}

fn slice_mut(memory: &mut [u8], at: i32, len: i32) -> Result<&mut [u8], extism::Error> {
    let (at, len) = (at as u32 as usize, len as u32 as usize);
    memory
        .get_mut(at..at.saturating_add(len))
        .ok_or_else(|| extism::Error::msg("kvs_call: a range outside the guest's memory"))
}

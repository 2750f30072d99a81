// kvs.ts: the kvs WASM contract (docs/wasm-abi.md) for AssemblyScript guests, written
// from the specification alone. No Extism PDK: the kernel functions it needs are
// declared here as imports of `extism:host/env` (docs/wasm-abi.md, "Extism conventions").

// ---- Extism kernel: offsets and lengths are i64 ----
@external("extism:host/env", "input_length")
declare function extism_input_length(): u64;
@external("extism:host/env", "input_load_u8")
declare function extism_input_load_u8(offset: u64): u8;
@external("extism:host/env", "input_load_u64")
declare function extism_input_load_u64(offset: u64): u64;
@external("extism:host/env", "alloc")
declare function extism_alloc(length: u64): u64;
@external("extism:host/env", "free")
declare function extism_free(offset: u64): void;
@external("extism:host/env", "length")
declare function extism_length(offset: u64): u64;
@external("extism:host/env", "load_u8")
declare function extism_load_u8(offset: u64): u8;
@external("extism:host/env", "load_u64")
declare function extism_load_u64(offset: u64): u64;
@external("extism:host/env", "store_u8")
declare function extism_store_u8(offset: u64, value: u8): void;
@external("extism:host/env", "store_u64")
declare function extism_store_u64(offset: u64, value: u64): void;
@external("extism:host/env", "output_set")
declare function extism_output_set(offset: u64, length: u64): void;

// ---- kvs host functions (1.0): an Extism offset in, an Extism offset out ----
@external("extism:host/user", "kvs_get")
declare function host_kvs_get(input: u64): u64;
@external("extism:host/user", "kvs_put")
declare function host_kvs_put(input: u64): u64;
@external("extism:host/user", "kvs_delete")
declare function host_kvs_delete(input: u64): u64;

export const KIND_FRONTEND: u8 = 2;
export const OK: u8 = 0;
export const NOT_FOUND: u8 = 1;
export const INVALID_INPUT: u8 = 2;
export const TOO_LARGE: u8 = 3;
export const UNAVAILABLE: u8 = 4;
export const INTERNAL: u8 = 5;
export const UNAUTHENTICATED: u8 = 6;
export const PERMISSION_DENIED: u8 = 7;

// Called instead of AssemblyScript's default `env.abort` import (built with
// `--use abort=assembly/kvs/trap`): kvs provides no `env` module. A trap fails the call
// and the host discards the instance.
function trap(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}

// ---- Encoding: little-endian integers; bytes and str are a u32 length, then the bytes ----
export class Writer {
  buf: Uint8Array = new Uint8Array(64);
  len: i32 = 0;

  private reserve(more: i32): void {
    if (this.len + more <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + more) cap *= 2;
    const bigger = new Uint8Array(cap);
    memory.copy(bigger.dataStart, this.buf.dataStart, this.len);
    this.buf = bigger;
  }
  u8(v: u8): Writer {
    this.reserve(1);
    store<u8>(this.buf.dataStart + this.len, v);
    this.len += 1;
    return this;
  }
  u16(v: u16): Writer {
    this.reserve(2);
    store<u16>(this.buf.dataStart + this.len, v); // wasm memory is little-endian
    this.len += 2;
    return this;
  }
  u32(v: u32): Writer {
    this.reserve(4);
    store<u32>(this.buf.dataStart + this.len, v);
    this.len += 4;
    return this;
  }
  u64(v: u64): Writer {
    this.reserve(8);
    store<u64>(this.buf.dataStart + this.len, v);
    this.len += 8;
    return this;
  }
  raw(b: Uint8Array): Writer {
    this.reserve(b.length);
    memory.copy(this.buf.dataStart + this.len, b.dataStart, b.length);
    this.len += b.length;
    return this;
  }
  bytes(b: Uint8Array): Writer {
    return this.u32(b.length as u32).raw(b);
  }
  str(s: string): Writer {
    return this.bytes(Uint8Array.wrap(String.UTF8.encode(s)));
  }
  finish(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

export class Reader {
  at: i32 = 0;
  bad: bool = false;
  constructor(public buf: Uint8Array) {}

  private take(n: i32): i32 {
    if (this.bad || n < 0 || this.buf.length - this.at < n) {
      this.bad = true;
      return -1;
    }
    const start = this.at;
    this.at += n;
    return start;
  }
  u8(): u8 {
    const i = this.take(1);
    return i < 0 ? 0 : this.buf[i];
  }
  u16(): u16 {
    const i = this.take(2);
    return i < 0 ? 0 : load<u16>(this.buf.dataStart + i);
  }
  u32(): u32 {
    const i = this.take(4);
    return i < 0 ? 0 : load<u32>(this.buf.dataStart + i);
  }
  u64(): u64 {
    const i = this.take(8);
    return i < 0 ? 0 : load<u64>(this.buf.dataStart + i);
  }
  bytes(): Uint8Array {
    const n = this.u32();
    if (n > <u32>i32.MAX_VALUE) {
      this.bad = true;
      return new Uint8Array(0);
    }
    const i = this.take(n as i32);
    return i < 0 ? new Uint8Array(0) : this.buf.slice(i, i + (n as i32));
  }
  str(): string {
    const b = this.bytes();
    return String.UTF8.decode(b.buffer);
  }
  rest(): i32 {
    return this.buf.length - this.at;
  }
}

// ---- Extism input and output ----

// The call's input.
export function input(): Uint8Array {
  const n = extism_input_length() as i32;
  const out = new Uint8Array(n);
  let i = 0;
  for (; i + 8 <= n; i += 8) store<u64>(out.dataStart + i, extism_input_load_u64(i as u64));
  for (; i < n; i++) out[i] = extism_input_load_u8(i as u64);
  return out;
}

// Copies bytes into a new block of Extism memory; returns its offset.
function toExtism(b: Uint8Array): u64 {
  const n = b.length;
  const off = extism_alloc(n as u64);
  let i = 0;
  for (; i + 8 <= n; i += 8) extism_store_u64(off + (i as u64), load<u64>(b.dataStart + i));
  for (; i < n; i++) extism_store_u8(off + (i as u64), b[i]);
  return off;
}

// Reads (and frees) a block of Extism memory a host function returned.
function fromExtism(off: u64): Uint8Array {
  const n = extism_length(off) as i32;
  const out = new Uint8Array(n);
  let i = 0;
  for (; i + 8 <= n; i += 8) store<u64>(out.dataStart + i, extism_load_u64(off + (i as u64)));
  for (; i < n; i++) out[i] = extism_load_u8(off + (i as u64));
  extism_free(off);
  return out;
}

// Sets the export's output; returns the export's result (0 = success).
export function output(b: Uint8Array): i32 {
  extism_output_set(toExtism(b), b.length as u64);
  return 0;
}

// An error a host call answered: an error code and its message.
export class KvsError {
  constructor(public code: u8, public message: string) {}
}

// The last host call's error, or null if it succeeded.
export let lastError: KvsError | null = null;

// Calls a store host function; the result frame's payload, or null (see lastError).
function callHost(kind: i32, msg: Uint8Array): Reader | null {
  const inOff = toExtism(msg);
  let outOff: u64;
  if (kind == 0) outOff = host_kvs_get(inOff);
  else if (kind == 1) outOff = host_kvs_put(inOff);
  else outOff = host_kvs_delete(inOff);
  extism_free(inOff);
  const r = new Reader(fromExtism(outOff));
  const code = r.u8();
  if (r.bad) {
    lastError = new KvsError(INTERNAL, "host returned an empty frame");
    return null;
  }
  if (code != OK) {
    lastError = new KvsError(code, r.str());
    return null;
  }
  lastError = null;
  return r;
}

// kvs_get: the value, or null if absent (lastError null) or on error (lastError set).
export function get(key: Uint8Array): Uint8Array | null {
  const r = callHost(0, new Writer().bytes(key).finish());
  if (r == null) return null;
  if (r.u8() == 0) return null;
  const v = r.bytes();
  if (r.bad) {
    lastError = new KvsError(INTERNAL, "malformed kvs_get answer");
    return null;
  }
  return v;
}

// kvs_put: true if accepted.
export function put(key: Uint8Array, value: Uint8Array): bool {
  return callHost(1, new Writer().bytes(key).bytes(value).finish()) != null;
}

// kvs_delete: true if accepted (a missing key is not an error).
export function del(key: Uint8Array): bool {
  return callHost(2, new Writer().bytes(key).finish()) != null;
}

// The HTTP status kvs's REST frontends answer for an error code.
export function httpStatus(e: KvsError): u16 {
  switch (e.code) {
    case NOT_FOUND: return 404;
    case INVALID_INPUT: return 400;
    case TOO_LARGE: return e.message.startsWith("key") ? 414 : 413;
    case UNAVAILABLE: return 503;
    case UNAUTHENTICATED: return 401;
    case PERMISSION_DENIED: return 403;
    default: return 500;
  }
}

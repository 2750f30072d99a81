// as-rest: the book's REST API (PUT/GET/DELETE /v1/key/{key}, or the short form
// /v1/{key}) as a kvs WASM HTTP
// frontend in AssemblyScript, written from docs/wasm-abi.md. Declares contract 1.2 (its
// capability protocol:kvs-rest is a 1.2 promise); uses only 1.0 host functions.
import {
  KIND_FRONTEND, INVALID_INPUT, KvsError, Reader, Writer,
  del, get, httpStatus, input, lastError, output, put,
} from "./kvs";


const PREFIX = "/v1/key/";
const SHORT = "/v1/";

export function kvs_handshake(): i32 {
  // The handshake is the output itself: no result frame around it.
  const w = new Writer();
  w.raw(Uint8Array.wrap(String.UTF8.encode("KVSPLUG\0", false)));
  w.u16(1).u16(2).u8(KIND_FRONTEND);
  w.str("as-rest").str("0.1.0").str("the book's REST API in AssemblyScript");
  w.u32(2).str("frontend:http").str("protocol:kvs-rest");
  return output(w.finish());
}

class Header {
  constructor(public name: string, public value: Uint8Array) {}
}

function hex(c: u8): i32 {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

// The key a path names under `prefix`: without ?query, percent-decoded; null if empty.
function keyOf(path: string, prefix: string): Uint8Array | null {
  const q = path.indexOf("?");
  const p = q < 0 ? path : path.substring(0, q);
  const raw = Uint8Array.wrap(String.UTF8.encode(p.substring(prefix.length)));
  const key = new Uint8Array(raw.length);
  let n = 0;
  for (let i = 0; i < raw.length; ) {
    if (raw[i] == 37 && i + 2 < raw.length && hex(raw[i + 1]) >= 0 && hex(raw[i + 2]) >= 0) {
      key[n++] = ((hex(raw[i + 1]) << 4) | hex(raw[i + 2])) as u8;
      i += 3;
    } else {
      key[n++] = raw[i++];
    }
  }
  return n == 0 ? null : key.slice(0, n);
}

// The answer: ok, then status:u16, headers:(u32 count, (name:str value:bytes)*), body:bytes.
function respond(status: u16, headers: Header[], body: Uint8Array): i32 {
  const w = new Writer();
  w.u8(0).u16(status).u32(headers.length as u32);
  for (let i = 0; i < headers.length; i++) w.str(headers[i].name).bytes(headers[i].value);
  w.bytes(body);
  return output(w.finish());
}

function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

function text(status: u16, message: string): i32 {
  return respond(status, [new Header("content-type", utf8("text/plain; charset=utf-8"))],
    utf8(message + "\n"));
}

function failed(e: KvsError | null): i32 {
  const err = e == null ? new KvsError(5, "unknown error") : e;
  return text(httpStatus(err), err.message);
}

export function kvs_http_handle(): i32 {
  // method:str path:str headers body, then (1.1+ hosts) the request context, which
  // this frontend does not need: the host applies it to the store calls itself.
  const r = new Reader(input());
  const method = r.str();
  const path = r.str();
  const headerCount = r.u32();
  for (let i: u32 = 0; i < headerCount && !r.bad; i++) {
    r.str();
    r.bytes();
  }
  const body = r.bytes();
  if (r.bad) {
    const w = new Writer().u8(INVALID_INPUT).str("malformed request message");
    return output(w.finish());
  }
  const prefix = path.startsWith(PREFIX) ? PREFIX : path.startsWith(SHORT) ? SHORT : "";
  if (prefix == "") return text(404, "not found");
  if (method != "GET" && method != "HEAD" && method != "PUT" && method != "DELETE") {
    return respond(405, [new Header("allow", utf8("GET,HEAD,PUT,DELETE"))],
      utf8("method not allowed\n"));
  }
  const key = keyOf(path, prefix);
  if (key == null) return text(400, "empty key");
  if (method == "PUT") {
    return put(key, body) ? respond(201, [], new Uint8Array(0)) : failed(lastError);
  }
  if (method == "DELETE") {
    return del(key) ? respond(200, [], new Uint8Array(0)) : failed(lastError);
  }
  const value = get(key);
  if (value == null) return lastError == null ? text(404, "no such key") : failed(lastError);
  return respond(200, [new Header("content-type", utf8("application/octet-stream"))], value);
}

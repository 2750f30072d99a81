// Runs the C and AssemblyScript guests against docs/wasm-abi.md's worked examples
// (section 6.11), on a minimal Extism kernel written here from the spec's section 2:
// the guests must read the example inputs and write the example outputs byte for byte.
//
//   node wasm-plugins/abi-vectors.mjs DIR_WITH_THE_GUESTS [docs/wasm-abi.md]
//
// host/tests/wasm_abi.rs runs it; plugin-api/tests/wasm_abi_doc.rs holds the examples
// to the host's Rust codec, so the guests are held to it too.
import { readFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { WASI } from "node:wasi";

const here = dirname(fileURLToPath(import.meta.url));
const guests = process.argv[2];
const spec = readFileSync(process.argv[3] ?? join(here, "../docs/wasm-abi.md"), "utf8");

// The examples: ```text blocks starting `example NAME`, hex with # comments.
const examples = {};
for (const block of spec.split("```text\n").slice(1)) {
  const lines = block.split("\n```")[0].split("\n");
  const m = /^example (\S+)$/.exec(lines[0].trim());
  if (!m) continue;
  const hex = lines.slice(1).map((l) => l.split("#")[0]).join(" ").trim().split(/\s+/);
  examples[m[1]] = Uint8Array.from(hex.map((h) => parseInt(h, 16)));
}

const hex = (b) => Buffer.from(b).toString("hex").replace(/(..)/g, "$1 ").trim();
let failures = 0;
function expect(what, got, want) {
  if (Buffer.compare(Buffer.from(got), Buffer.from(want)) !== 0) {
    console.error(`FAIL ${what}\n  got  ${hex(got)}\n  want ${hex(want)}`);
    failures++;
  } else {
    console.log(`ok   ${what}`);
  }
}

// A minimal Extism kernel: blocks in one growing buffer, offset 0 = the empty block.
function kernel() {
  const k = { heap: new Uint8Array(1 << 16), top: 8, blocks: new Map(), input: new Uint8Array(0), output: null };
  const grow = (n) => {
    while (k.top + n > k.heap.length) {
      const bigger = new Uint8Array(k.heap.length * 2);
      bigger.set(k.heap);
      k.heap = bigger;
    }
  };
  k.put = (bytes) => {
    if (bytes.length === 0) return 0n;
    const off = env.alloc(BigInt(bytes.length));
    k.heap.set(bytes, Number(off));
    return off;
  };
  k.get = (off) => k.heap.slice(Number(off), Number(off) + (k.blocks.get(Number(off)) ?? 0));
  const view = () => new DataView(k.heap.buffer);
  const env = {
    alloc: (n) => { grow(Number(n)); const off = k.top; k.blocks.set(off, Number(n)); k.top += Number(n) || 1; return BigInt(off); },
    free: (off) => { k.blocks.delete(Number(off)); },
    length: (off) => BigInt(k.blocks.get(Number(off)) ?? 0),
    load_u8: (a) => k.heap[Number(a)],
    load_u64: (a) => view().getBigUint64(Number(a), true),
    store_u8: (a, v) => { k.heap[Number(a)] = v; },
    store_u64: (a, v) => view().setBigUint64(Number(a), v, true),
    input_length: () => BigInt(k.input.length),
    input_load_u8: (i) => k.input[Number(i)],
    input_load_u64: (i) => new DataView(k.input.buffer, k.input.byteOffset).getBigUint64(Number(i), true),
    output_set: (off, n) => { k.output = k.heap.slice(Number(off), Number(off) + Number(n)); },
    error_set: () => { throw new Error("error_set"); },
  };
  k.env = env;
  // An export call: reset, input in, output out; a non-zero return is a failure.
  k.call = (instance, name, input) => {
    k.blocks.clear(); k.top = 8; k.input = input; k.output = new Uint8Array(0);
    const rc = instance.exports[name]();
    if (rc !== 0) throw new Error(`${name} returned ${rc}`);
    return k.output;
  };
  return k;
}

// The C logger, with a fresh /data.
{
  const data = mkdtempSync(join(tmpdir(), "kvs-abi-vectors-"));
  try {
    const k = kernel();
    const logged = [];
    const wasi = new WASI({ version: "preview1", preopens: { "/data": data } });
    const module = new WebAssembly.Module(readFileSync(join(guests, "kvs_c_logger.wasm")));
    const instance = new WebAssembly.Instance(module, {
      "extism:host/env": k.env,
      "extism:host/user": { kvs_log: (off) => logged.push(k.get(off)) },
      ...wasi.getImportObject(),
    });
    wasi.initialize(instance);
    const h = k.call(instance, "kvs_handshake", new Uint8Array(0));
    expect("c-logger: handshake starts with magic, api 1.1, kind logger", h.slice(0, 13), examples.handshake.slice(0, 13));
    expect("c-logger: kvs_logger_open (empty config) answers ok", k.call(instance, "kvs_logger_open", new Uint8Array(0)), [0]);
    expect("c-logger: kvs_log record is level info, empty target", logged[0]?.slice(0, 5) ?? [], [3, 0, 0, 0, 0]);
    expect("c-logger: kvs_logger_append(example events) answers ok", k.call(instance, "kvs_logger_append", examples.events), [0]);
    expect("c-logger: kvs_logger_replay(cursor 0) is example replay_out", k.call(instance, "kvs_logger_replay", new Uint8Array(8)), examples.replay_out);
    expect("c-logger: kvs_logger_close answers ok", k.call(instance, "kvs_logger_close", new Uint8Array(0)), [0]);
  } finally {
    rmSync(data, { recursive: true, force: true });
  }
}

// The AssemblyScript frontend, its store calls answered with the examples.
{
  const k = kernel();
  const calls = [];
  let answer = examples.kvs_get_out_found;
  const store = (name) => (off) => { calls.push([name, k.get(off)]); return k.put(answer); };
  const module = new WebAssembly.Module(readFileSync(join(guests, "kvs_as_rest.wasm")));
  const instance = new WebAssembly.Instance(module, {
    "extism:host/env": k.env,
    "extism:host/user": { kvs_get: store("kvs_get"), kvs_put: store("kvs_put"), kvs_delete: store("kvs_delete") },
  });
  const h = k.call(instance, "kvs_handshake", new Uint8Array(0));
  expect("as-rest: handshake starts with magic, api 1.2, kind frontend", h.slice(0, 13),
    [...examples.handshake.slice(0, 10), 2, 0, 2]);
  answer = Uint8Array.from([0]); // kvs_put: ok
  const out = k.call(instance, "kvs_http_handle", examples.http_request);
  expect("as-rest: example http_request makes the store call example kvs_put_in", calls[0]?.[1] ?? [], examples.kvs_put_in);
  expect("as-rest: and answers example http_response_out", out, examples.http_response_out);
  answer = examples.error_frame; // kvs_put refused: permission_denied "no"
  const refused = k.call(instance, "kvs_http_handle", examples.http_request);
  // ok, status 403, one header (content-type), then the body "no\n".
  expect("as-rest: example error_frame from kvs_put answers 403", refused.slice(0, 3), [0, 0x93, 0x01]);
  expect("as-rest: with the message as its body", refused.slice(-7), [3, 0, 0, 0, 0x6e, 0x6f, 0x0a]);
  // The same request as a GET: the method is the first field.
  const get = Uint8Array.from([3, 0, 0, 0, ...Buffer.from("GET"), ...examples.http_request.slice(7)]);
  answer = examples.kvs_get_out_found;
  const found = k.call(instance, "kvs_http_handle", get);
  expect("as-rest: a GET answered example kvs_get_out_found answers 200", found.slice(0, 3), [0, 200, 0]);
  expect("as-rest: with the value as its body", found.slice(-6), [2, 0, 0, 0, 0x68, 0x69]);
  answer = examples.kvs_get_out_missing;
  expect("as-rest: a GET answered example kvs_get_out_missing answers 404",
    k.call(instance, "kvs_http_handle", get).slice(0, 3), [0, 0x94, 0x01]);
}

if (failures) {
  console.error(`${failures} check(s) failed`);
  process.exit(1);
}
console.log("all checks passed");

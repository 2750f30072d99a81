/*
 * kvs_abi.h: the kvs WASM contract (docs/wasm-abi.md) for C guests, written from the
 * specification alone. One header, no Extism PDK: the kernel functions it needs are
 * declared here as imports of `extism:host/env` (docs/wasm-abi.md, "Extism conventions").
 *
 * Build with clang for wasm32-wasi as a reactor (`-mexec-model=reactor`), so wasi-libc
 * is initialised by `_initialize` (which Extism calls before the first export).
 */
#ifndef KVS_ABI_H
#define KVS_ABI_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KVS_ENV(n) __attribute__((import_module("extism:host/env"), import_name(n)))
#define KVS_USER(n) __attribute__((import_module("extism:host/user"), import_name(n)))
#define KVS_EXPORT(n) __attribute__((export_name(n)))

/* Extism kernel (spec: "Extism conventions"). Offsets and lengths are i64. */
KVS_ENV("input_length") uint64_t extism_input_length(void);
KVS_ENV("input_load_u8") uint8_t extism_input_load_u8(uint64_t offset);
KVS_ENV("input_load_u64") uint64_t extism_input_load_u64(uint64_t offset);
KVS_ENV("alloc") uint64_t extism_alloc(uint64_t length);
KVS_ENV("free") void extism_free(uint64_t offset);
KVS_ENV("length") uint64_t extism_length(uint64_t offset);
KVS_ENV("load_u8") uint8_t extism_load_u8(uint64_t offset);
KVS_ENV("load_u64") uint64_t extism_load_u64(uint64_t offset);
KVS_ENV("store_u8") void extism_store_u8(uint64_t offset, uint8_t value);
KVS_ENV("store_u64") void extism_store_u64(uint64_t offset, uint64_t value);
KVS_ENV("output_set") void extism_output_set(uint64_t offset, uint64_t length);

/* kvs host functions (spec: "Host functions"): a memory offset in, one out. */
KVS_USER("kvs_log") void kvs_host_log(uint64_t record); /* 1.1 */

/* Contract constants (spec: "Constants"). */
enum { KVS_API_MAJOR = 1 };
enum { KVS_KIND_LOGGER = 1, KVS_KIND_FRONTEND = 2 };
enum { KVS_EVENT_PUT = 1, KVS_EVENT_DELETE = 2 };
enum { KVS_LEVEL_ERROR = 1, KVS_LEVEL_WARN, KVS_LEVEL_INFO, KVS_LEVEL_DEBUG, KVS_LEVEL_TRACE };
enum {
    KVS_OK = 0,
    KVS_NOT_FOUND = 1,
    KVS_INVALID_INPUT = 2,
    KVS_TOO_LARGE = 3,
    KVS_UNAVAILABLE = 4,
    KVS_INTERNAL = 5,
    KVS_UNAUTHENTICATED = 6,     /* 1.2 */
    KVS_PERMISSION_DENIED = 7,   /* 1.2 */
};

/* ---- A growable byte buffer that encodes the wire format (little-endian). ---- */
typedef struct {
    uint8_t *data;
    size_t len, cap;
    int failed; /* out of memory */
} kvs_buf;

static inline void kvs_buf_reserve(kvs_buf *b, size_t more) {
    if (b->failed || b->len + more <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more) cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) { b->failed = 1; return; }
    b->data = p;
    b->cap = cap;
}
static inline void kvs_put_raw(kvs_buf *b, const void *p, size_t n) {
    kvs_buf_reserve(b, n);
    if (b->failed) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
}
static inline void kvs_put_u8(kvs_buf *b, uint8_t v) { kvs_put_raw(b, &v, 1); }
static inline void kvs_put_u16(kvs_buf *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    kvs_put_raw(b, x, 2);
}
static inline void kvs_put_u32(kvs_buf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    kvs_put_raw(b, x, 4);
}
static inline void kvs_put_u64(kvs_buf *b, uint64_t v) {
    kvs_put_u32(b, (uint32_t)v);
    kvs_put_u32(b, (uint32_t)(v >> 32));
}
/* bytes / str: u32 length, then the bytes. */
static inline void kvs_put_bytes(kvs_buf *b, const void *p, size_t n) {
    kvs_put_u32(b, (uint32_t)n);
    kvs_put_raw(b, p, n);
}
static inline void kvs_put_str(kvs_buf *b, const char *s) { kvs_put_bytes(b, s, strlen(s)); }
static inline void kvs_buf_free(kvs_buf *b) { free(b->data); *b = (kvs_buf){0}; }

/* ---- A reader over a received message; `bad` is set on the first short read. ---- */
typedef struct {
    const uint8_t *p;
    size_t left;
    int bad;
} kvs_reader;

static inline const uint8_t *kvs_take(kvs_reader *r, size_t n) {
    if (r->bad || r->left < n) { r->bad = 1; return NULL; }
    const uint8_t *at = r->p;
    r->p += n;
    r->left -= n;
    return at;
}
static inline uint8_t kvs_get_u8(kvs_reader *r) { const uint8_t *p = kvs_take(r, 1); return p ? p[0] : 0; }
static inline uint32_t kvs_get_u32(kvs_reader *r) {
    const uint8_t *p = kvs_take(r, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}
static inline uint64_t kvs_get_u64(kvs_reader *r) {
    uint64_t lo = kvs_get_u32(r);
    return lo | (uint64_t)kvs_get_u32(r) << 32;
}
static inline const uint8_t *kvs_get_bytes(kvs_reader *r, uint32_t *n) {
    *n = kvs_get_u32(r);
    return kvs_take(r, *n);
}

/* ---- Extism input and output. ---- */

/* The call's input, copied into a malloc'd buffer (free it); NULL only if out of memory. */
static inline uint8_t *kvs_input(size_t *len) {
    uint64_t n = extism_input_length();
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return NULL;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = extism_input_load_u64(i);
        memcpy(buf + i, &w, 8); /* wasm32 is little-endian, as Extism's memory */
    }
    for (; i < n; i++) buf[i] = extism_input_load_u8(i);
    *len = (size_t)n;
    return buf;
}

/* Copies bytes into a new block of Extism memory; returns its offset (0 if none). */
static inline uint64_t kvs_to_extism(const uint8_t *p, size_t n) {
    uint64_t off = extism_alloc(n);
    if (!off && n) return 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        extism_store_u64(off + i, w);
    }
    for (; i < n; i++) extism_store_u8(off + i, p[i]);
    return off;
}

/* Sets the export's output to `b` and returns the export's status (0 = success). */
static inline int32_t kvs_output(kvs_buf *b) {
    if (b->failed) return 1;
    uint64_t off = kvs_to_extism(b->data, b->len);
    if (!off && b->len) return 1;
    extism_output_set(off, b->len);
    return 0;
}

/* Result frames: 0 then the payload, or a code then a message. */
static inline int32_t kvs_respond_error(uint8_t code, const char *message) {
    kvs_buf b = {0};
    kvs_put_u8(&b, code ? code : KVS_INTERNAL);
    kvs_put_str(&b, message);
    int32_t rc = kvs_output(&b);
    kvs_buf_free(&b);
    return rc;
}
static inline int32_t kvs_respond_ok_empty(void) {
    kvs_buf b = {0};
    kvs_put_u8(&b, KVS_OK);
    int32_t rc = kvs_output(&b);
    kvs_buf_free(&b);
    return rc;
}

/* The handshake header: magic, version, kind, name, version, description; the caller
 * appends the capability count and strings. */
static inline void kvs_handshake_head(kvs_buf *b, uint16_t minor, uint8_t kind, const char *name,
                                      const char *version, const char *description) {
    kvs_put_raw(b, "KVSPLUG\0", 8);
    kvs_put_u16(b, KVS_API_MAJOR);
    kvs_put_u16(b, minor);
    kvs_put_u8(b, kind);
    kvs_put_str(b, name);
    kvs_put_str(b, version);
    kvs_put_str(b, description);
}

/* kvs_log (1.1): one record into the host's log. */
static inline void kvs_log(uint8_t level, const char *message, const char *key, const char *value) {
    kvs_buf b = {0};
    kvs_put_u8(&b, level);
    kvs_put_str(&b, "");
    kvs_put_str(&b, message);
    kvs_put_u32(&b, key ? 1 : 0);
    if (key) {
        kvs_put_str(&b, key);
        kvs_put_str(&b, value);
    }
    if (!b.failed) {
        uint64_t off = kvs_to_extism(b.data, b.len);
        if (off) {
            kvs_host_log(off);
            extism_free(off);
        }
    }
    kvs_buf_free(&b);
}

#endif

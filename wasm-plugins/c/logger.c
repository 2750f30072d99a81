/*
 * c-logger: a kvs transaction logger in C, written from docs/wasm-abi.md.
 *
 * It asks for `fs:data-dir` and keeps one file, /data/c-logger.log, of records
 *     len:u32 events          (events exactly as kvs_logger_append received them)
 * each followed by fdatasync before `append` answers. A record cut short by a crash
 * (its length runs past the end of the file) is cut off at open. Replay hands the
 * records back a chunk at a time; the cursor is the file offset of the next record.
 * Its config table is ignored (`repair = true` included). Declares contract 1.1: it
 * uses `kvs_log` (1.1) and nothing newer, so every 1.1+ host loads it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "kvs_abi.h"

#define LOG_PATH "/data/c-logger.log"
/* A replay chunk stops after the record that takes it past this many bytes. */
#define CHUNK_BYTES (1u << 20)

static int log_fd = -1;
static uint64_t log_size; /* bytes of complete records */

static int32_t fail_errno(uint8_t code, const char *what) {
    char message[256];
    snprintf(message, sizeof message, "%s %s: %s", what, LOG_PATH, strerror(errno));
    return kvs_respond_error(code, message);
}

KVS_EXPORT("kvs_handshake") int32_t kvs_handshake(void) {
    kvs_buf b = {0};
    /* The handshake is the output itself: no result frame around it. */
    kvs_handshake_head(&b, 1, KVS_KIND_LOGGER, "c-logger", "0.1.0",
                       "a transaction log in C, in the granted data_dir");
    kvs_put_u32(&b, 1);
    kvs_put_str(&b, "fs:data-dir");
    int32_t rc = kvs_output(&b);
    kvs_buf_free(&b);
    return rc;
}

/* Reads exactly n bytes at offset, or fails. */
static int read_at(uint8_t *to, size_t n, uint64_t offset) {
    while (n) {
        ssize_t got = pread(log_fd, to, n, (off_t)offset);
        if (got <= 0) {
            if (got == 0) errno = EIO;
            return -1;
        }
        to += got;
        n -= (size_t)got;
        offset += (uint64_t)got;
    }
    return 0;
}

KVS_EXPORT("kvs_logger_open") int32_t kvs_logger_open(void) {
    /* The input is the plug-in's TOML table minus the sandbox keys; this logger has no
     * settings of its own. */
    if (log_fd >= 0) close(log_fd);
    log_fd = open(LOG_PATH, O_RDWR | O_CREAT, 0644);
    if (log_fd < 0) return fail_errno(KVS_INVALID_INPUT, "cannot open (is data_dir granted?)");
    off_t end = lseek(log_fd, 0, SEEK_END);
    if (end < 0) return fail_errno(KVS_UNAVAILABLE, "cannot seek");
    /* Find the end of the last complete record; cut a torn tail off. */
    uint64_t at = 0, records = 0;
    for (;;) {
        uint8_t head[4];
        if (at + 4 > (uint64_t)end || read_at(head, 4, at) != 0) break;
        uint32_t len = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                       (uint32_t)head[3] << 24;
        if (at + 4 + len > (uint64_t)end) break;
        at += 4 + (uint64_t)len;
        records++;
    }
    if (at < (uint64_t)end) {
        if (ftruncate(log_fd, (off_t)at) != 0 || fdatasync(log_fd) != 0)
            return fail_errno(KVS_UNAVAILABLE, "cannot cut the torn tail of");
    }
    log_size = at;
    char n[32], bytes[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)records);
    snprintf(bytes, sizeof bytes, "%llu", (unsigned long long)at);
    char message[64];
    snprintf(message, sizeof message, "opened with %s records", n);
    kvs_log(KVS_LEVEL_INFO, message, "bytes", bytes);
    return kvs_respond_ok_empty();
}

KVS_EXPORT("kvs_logger_append") int32_t kvs_logger_append(void) {
    if (log_fd < 0) return kvs_respond_error(KVS_INTERNAL, "logger used before open");
    size_t len;
    uint8_t *events = kvs_input(&len);
    if (!events) return kvs_respond_error(KVS_UNAVAILABLE, "out of memory");
    if (len < 4 || len > UINT32_MAX) {
        free(events);
        return kvs_respond_error(KVS_INVALID_INPUT, "not an events message");
    }
    kvs_buf record = {0};
    kvs_put_bytes(&record, events, len);
    free(events);
    if (record.failed) return kvs_respond_error(KVS_UNAVAILABLE, "out of memory");
    size_t done = 0;
    while (done < record.len) {
        ssize_t n = pwrite(log_fd, record.data + done, record.len - done, (off_t)(log_size + done));
        if (n <= 0) {
            kvs_buf_free(&record);
            /* What was written stays past log_size: the next append overwrites it, and
             * the next open cuts it off as a torn tail. */
            return fail_errno(KVS_UNAVAILABLE, "cannot write");
        }
        done += (size_t)n;
    }
    kvs_buf_free(&record);
    if (fdatasync(log_fd) != 0) return fail_errno(KVS_UNAVAILABLE, "cannot fdatasync");
    log_size += done;
    return kvs_respond_ok_empty();
}

KVS_EXPORT("kvs_logger_replay") int32_t kvs_logger_replay(void) {
    if (log_fd < 0) return kvs_respond_error(KVS_INTERNAL, "logger used before open");
    size_t len;
    uint8_t *input = kvs_input(&len);
    if (!input) return kvs_respond_error(KVS_UNAVAILABLE, "out of memory");
    kvs_reader r = {input, len, 0};
    uint64_t cursor = kvs_get_u64(&r);
    free(input);
    if (r.bad) return kvs_respond_error(KVS_INVALID_INPUT, "replay: no cursor");
    /* The answer: ok, next_cursor:u64, done:u8, events = count:u32 then each event. The
     * count is patched in once known; the events are the records' own, count dropped. */
    kvs_buf out = {0};
    kvs_put_u8(&out, KVS_OK);
    kvs_put_u64(&out, 0);
    kvs_put_u8(&out, 0);
    kvs_put_u32(&out, 0);
    uint64_t at = cursor;
    uint32_t count = 0;
    while (at < log_size && out.len < CHUNK_BYTES) {
        uint8_t head[4];
        if (read_at(head, 4, at) != 0) goto io_error;
        uint32_t rlen = (uint32_t)head[0] | (uint32_t)head[1] << 8 | (uint32_t)head[2] << 16 |
                        (uint32_t)head[3] << 24;
        uint8_t *record = malloc(rlen ? rlen : 1);
        if (!record) {
            kvs_buf_free(&out);
            return kvs_respond_error(KVS_UNAVAILABLE, "out of memory");
        }
        if (read_at(record, rlen, at + 4) != 0) {
            free(record);
            goto io_error;
        }
        kvs_reader rr = {record, rlen, 0};
        count += kvs_get_u32(&rr);
        if (rr.bad) {
            free(record);
            kvs_buf_free(&out);
            return kvs_respond_error(KVS_INTERNAL, "corrupt record in " LOG_PATH);
        }
        kvs_put_raw(&out, rr.p, rr.left);
        free(record);
        at += 4 + (uint64_t)rlen;
    }
    if (out.failed) {
        kvs_buf_free(&out);
        return kvs_respond_error(KVS_UNAVAILABLE, "out of memory");
    }
    int done = at >= log_size;
    uint64_t next = done ? 0 : at;
    memcpy(out.data + 1, &next, 8); /* little-endian, as wasm32 */
    out.data[9] = (uint8_t)done;
    memcpy(out.data + 10, &count, 4);
    int32_t rc = kvs_output(&out);
    kvs_buf_free(&out);
    return rc;
io_error:
    kvs_buf_free(&out);
    return fail_errno(KVS_UNAVAILABLE, "cannot read");
}

KVS_EXPORT("kvs_logger_close") int32_t kvs_logger_close(void) {
    if (log_fd >= 0) {
        int synced = fdatasync(log_fd);
        close(log_fd);
        log_fd = -1;
        if (synced != 0) return fail_errno(KVS_UNAVAILABLE, "cannot fdatasync");
    }
    return kvs_respond_ok_empty();
}

/*
 * loadclient: the WebSocket load generator of the rapidws benchmarks.
 *
 * One thread, one epoll set, non-blocking sockets to 127.0.0.1 only. bench/run.py
 * compiles it with `gcc -O2` into a temporary directory; it is never committed as
 * a binary.
 *
 *   loadclient -m echo      -P port [-c conns] [-s size] [-w warmup] [-d duration] [-R]
 *   loadclient -m handshake -P port [-c concurrency] [-w warmup] [-d duration]
 *   loadclient -m upload    -P port [-s size] [-w warmup] [-d duration]   (path /ack; size < 4 GiB)
 *   loadclient -m idle      -P port [-c conns] [-H hold] [-R]
 *   loadclient -m rate      -P port -r msgs_per_s [-c conns] [-s size] [-w warmup] [-d duration]
 *   common: [-p server_pid] [-u path] [-L open_limit]
 *
 * echo:      every connection keeps exactly one binary message of `size` bytes in
 *            flight and checks that the echo is byte-for-byte what it sent; every
 *            frame is masked with a fresh key, as a client must.
 *            -R: raw TCP, no handshake and no framing (the floor).
 * handshake: `concurrency` slots, each cycling connect, upgrade (101 and the
 *            Sec-WebSocket-Accept value are checked), close frame, the server's
 *            close frame, the server's FIN, close.
 * upload:    one connection to /ack sends `size`-byte binary messages and waits for
 *            each ack (the length, as text) before the next.
 *            -R: raw TCP; each message is an 8-byte big-endian length and the
 *            payload (a leading zero byte tells the raw server to ack, not echo).
 * rate:      open model (as wrk2): once every connection is open, each sends `rate`
 *            binary messages per second whatever the replies do, the connections in
 *            turn, on a timerfd (ns precision, no timer slack). Each message starts
 *            with its sequence number on the connection and its intended send time
 *            (8 bytes each, native order; `size` >= 16); the latency of its echo is
 *            measured from that intended time, so a late sender or a stalled server
 *            counts in full (corrected for coordinated omission). The echo is checked
 *            byte for byte against the message rebuilt from its sequence number.
 * idle:      opens 20 warm-up connections (one 16-byte echo each) and closes them,
 *            prints "base", waits 1 s, opens `conns` connections (one 16-byte echo
 *            each, at most `open_limit` handshakes at a time), prints
 *            "held <n> <seconds>", holds them for `hold` seconds (answering pings),
 *            then closes them all.
 *
 * Latencies go to a log-linear histogram (exact below 2048 us, then 1024 buckets
 * per power of two: 0.1% wide, as HdrHistogram's 3 significant digits; bounded).
 * Rates are counted over `duration` seconds after `warmup` seconds (the clock
 * starts once every connection is open). With -p, the server's CPU time (utime +
 * stime from /proc/PID/stat) is sampled at both ends of the measured window. The
 * last line on stdout is "result {json}". Exit status 0, or 2 on a fatal error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum { M_ECHO, M_HANDSHAKE, M_UPLOAD, M_IDLE, M_RATE };
enum { S_FREE, S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSING, S_WAIT_EOF };
enum {
    E_CONNECT, E_HANDSHAKE, E_PROTOCOL, E_MISMATCH, E_EOF, E_SERVER_CLOSE,
    E_IO, E_TIMEOUT, E_CLOSE_TIMEOUT, E_COUNT
};
static const char *ERROR_NAMES[E_COUNT] = {
    "connect", "handshake", "protocol", "mismatch", "unexpected_eof",
    "server_close", "io", "timeout", "close_timeout",
};

#define RBUF_SIZE (256 * 1024)
#define HBUF_SIZE 4096
/* the histogram: exact below 2^(SUB_BITS + 1) us, then 2^SUB_BITS buckets per power of two,
   up to 2^41 us (25 days; longer values land in the last bucket) */
#define SUB_BITS 10
#define HIST_TOP ((1ULL << 41) - 1)
#define HIST_BUCKETS ((42 - SUB_BITS) << SUB_BITS)
#define STAMP 16 /* rate mode: sequence number and intended send time */
#define OPEN_TIMEOUT 10.0
#define CLOSE_TIMEOUT 3.0
#define MESSAGE_TIMEOUT 30.0

typedef struct {
    int fd, state, events;
    unsigned gen;
    uint8_t *out;
    const uint8_t *ext; /* raw mode: send straight from the payload, not from out */
    size_t cap, len, off;
    char hbuf[HBUF_SIZE];
    int hlen;
    char accept[32];
    uint8_t ph[14];       /* frame header being assembled */
    int phlen;
    int inpay, fop, ffin; /* in a payload; its frame's opcode and FIN */
    uint64_t rem;         /* payload bytes left in this frame */
    int mop;              /* opcode of the message being received, -1 if none */
    uint64_t moff;        /* bytes of that message received so far */
    uint8_t ctl[128];
    int ctllen;
    char ack[32];
    int acklen;
    int inflight, opened, idle_done, counted_open, restart; /* inflight: a count in rate mode */
    uint64_t seq_recv; /* rate mode: the sequence number of the next echo */
    double sent, deadline;
} conn_t;

typedef struct {
    uint64_t *bucket, n;
    double max;
} hist_t;

/* configuration */
static int mode = M_ECHO, raw = 0, port = 0, nconn = 1, open_limit = 100;
static int ack_len; /* the length of an upload's ack: `size` in decimal */
static size_t size = 16;
static double warmup = 1.0, duration = 5.0, hold = 3.0, send_rate = 0;
static const char *path = "/";
static int server_pid = 0;

/* state */
static int ep;
static conn_t *conns;
static int nconns_alloc;
static uint8_t *payload;
static uint8_t rbuf[RBUF_SIZE];
static uint64_t prng_state;
static int stopping, in_window;
static uint64_t done_count, errors[E_COUNT];
static char first_error[200];
static int n_active, n_opened, n_open_failed, n_idle_done, opening;
static int open_next, open_end, n_restart;
static hist_t latency, lateness; /* lateness: how late the rate mode's sends left */
static int tfd = -1;              /* rate mode: the timerfd of the next send */
static double rate_start, rate_step; /* rate mode: the first send, the time between two */
static uint64_t rate_slot;        /* rate mode: the next send, counted over all connections */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t prng(void) { /* xorshift64*: fast, not cryptographic */
    prng_state ^= prng_state >> 12;
    prng_state ^= prng_state << 25;
    prng_state ^= prng_state >> 27;
    return prng_state * 0x2545F4914F6CDD1DULL;
}

/* ---- SHA-1 and base64, for Sec-WebSocket-Accept ---- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *b) {
    uint32_t w[80], a = h[0], bb = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)b[4 * t] << 24 | (uint32_t)b[4 * t + 1] << 16 |
               (uint32_t)b[4 * t + 2] << 8 | b[4 * t + 3];
    for (int t = 16; t < 80; t++) w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) f = (bb & c) | (~bb & d), k = 0x5A827999;
        else if (t < 40) f = bb ^ c ^ d, k = 0x6ED9EBA1;
        else if (t < 60) f = (bb & c) | (bb & d) | (c & d), k = 0x8F1BBCDC;
        else f = bb ^ c ^ d, k = 0xCA62C1D6;
        uint32_t tmp = rol(a, 5) + f + e + k + w[t];
        e = d, d = c, c = rol(bb, 30), bb = a, a = tmp;
    }
    h[0] += a, h[1] += bb, h[2] += c, h[3] += d, h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t block[64];
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, data + i);
    size_t rest = len - i;
    memset(block, 0, 64);
    memcpy(block, data + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, 64);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) block[63 - j] = (uint8_t)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 5; j++)
        for (int k = 0; k < 4; k++) out[4 * j + k] = (uint8_t)(h[j] >> (24 - 8 * k));
}

static void base64(const uint8_t *in, size_t n, char *out) {
    static const char T[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *out++ = T[v >> 18], *out++ = T[(v >> 12) & 63], *out++ = T[(v >> 6) & 63], *out++ = T[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        *out++ = T[v >> 18], *out++ = T[(v >> 12) & 63], *out++ = '=', *out++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        *out++ = T[v >> 18], *out++ = T[(v >> 12) & 63], *out++ = T[(v >> 6) & 63], *out++ = '=';
    }
    *out = 0;
}

static void accept_value(const char *key, char *out) {
    char buf[128];
    uint8_t digest[20];
    int n = snprintf(buf, sizeof buf, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    sha1((const uint8_t *)buf, (size_t)n, digest);
    base64(digest, 20, out);
}

/* ---- measurement ---- */

typedef struct {
    double t, server_cpu, client_cpu;
    uint64_t count;
} snap_t;

static double server_cpu_seconds(void) {
    if (!server_pid) return -1;
    char name[64], buf[1024];
    snprintf(name, sizeof name, "/proc/%d/stat", server_pid);
    int fd = open(name, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long utime = 0, stime = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return -1;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double client_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static void snapshot(snap_t *s) {
    s->t = now();
    s->count = done_count;
    s->server_cpu = server_cpu_seconds();
    s->client_cpu = client_cpu_seconds();
}

static void record(hist_t *h, double seconds) {
    double us = seconds > 0 ? seconds * 1e6 : 0;
    if (us > h->max) h->max = us;
    h->n++;
    uint64_t v = us < (double)HIST_TOP ? (uint64_t)us : HIST_TOP;
    if (v < (1u << SUB_BITS)) {
        h->bucket[v]++;
    } else {
        int e = 63 - __builtin_clzll(v) - SUB_BITS; /* v >> e has SUB_BITS + 1 bits */
        h->bucket[((uint64_t)e << SUB_BITS) + (v >> e)]++;
    }
}

/* The middle of the bucket holding the q-quantile, in us (never above the max). */
static double percentile(const hist_t *h, double q) {
    if (!h->n) return 0;
    uint64_t want = (uint64_t)(q * h->n), seen = 0;
    for (uint64_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->bucket[b];
        if (seen > want) {
            double low = (double)b, width = 1;
            if (b >= (2u << SUB_BITS)) {
                int e = (int)(b >> SUB_BITS) - 1;
                low = (double)((b - ((uint64_t)e << SUB_BITS)) << e);
                width = (double)(1ULL << e);
            }
            double mid = low + width / 2;
            return mid < h->max ? mid : h->max;
        }
    }
    return h->max;
}

static void error_at(int kind, const char *what) {
    errors[kind]++;
    if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s: %s", ERROR_NAMES[kind], what);
}

/* ---- connections ---- */

static void app_open(conn_t *c);
static int app_message(conn_t *c);
static void app_closed(conn_t *c, int failed);

static void ep_set(conn_t *c, int events) {
    if (c->events == events) return;
    struct epoll_event ev = {.events = (uint32_t)events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void open_settled(conn_t *c, int failed) {
    if (!c->counted_open) return;
    c->counted_open = 0;
    opening--;
    if (failed) n_open_failed++;
}

static void conn_close(conn_t *c, int failed) {
    close(c->fd);
    c->fd = -1;
    c->state = S_FREE;
    c->gen++;
    n_active--;
    open_settled(c, 1);
    app_closed(c, failed);
}

static void conn_fail(conn_t *c, int kind, const char *what) {
    error_at(kind, what);
    conn_close(c, 1);
}

static void ensure(conn_t *c, size_t extra) {
    if (c->off && c->off == c->len) c->off = c->len = 0;
    if (c->len + extra <= c->cap) return;
    if (c->off) {
        memmove(c->out, c->out + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
        if (c->len + extra <= c->cap) return;
    }
    size_t cap = c->cap ? c->cap : 256;
    while (cap < c->len + extra) cap *= 2;
    c->out = realloc(c->out, cap);
    if (!c->out) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    c->cap = cap;
}

/* Returns -1 if the connection was closed. */
static int flush(conn_t *c) {
    const uint8_t *base = c->ext ? c->ext : c->out;
    while (c->off < c->len) {
        ssize_t n = send(c->fd, base + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ep_set(c, EPOLLIN | EPOLLOUT);
            return 0;
        }
        conn_fail(c, E_IO, n < 0 ? strerror(errno) : "send returned 0");
        return -1;
    }
    c->off = c->len = 0;
    ep_set(c, EPOLLIN);
    return 0;
}

static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4]) {
    uint64_t k8;
    memcpy(&k8, key, 4);
    memcpy((uint8_t *)&k8 + 4, key, 4);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k8;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) dst[i] = src[i] ^ key[i & 3];
}

/* Append one masked frame to the output buffer (no flush). */
static void append_frame(conn_t *c, int opcode, const uint8_t *data, size_t n) {
    ensure(c, n + 14);
    uint8_t *h = c->out + c->len, key[4];
    size_t p;
    uint32_t k = (uint32_t)prng();
    memcpy(key, &k, 4);
    h[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        h[1] = (uint8_t)(0x80 | n);
        p = 2;
    } else if (n < 65536) {
        h[1] = 0x80 | 126, h[2] = (uint8_t)(n >> 8), h[3] = (uint8_t)n;
        p = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        p = 10;
    }
    memcpy(h + p, key, 4);
    p += 4;
    mask_copy(h + p, data, n, key);
    c->len += p + n;
}

static int send_message(conn_t *c) {
    c->mop = -1;
    c->moff = 0;
    c->acklen = 0;
    c->inflight = 1;
    c->sent = now();
    c->deadline = c->sent + MESSAGE_TIMEOUT;
    size_t n = mode == M_IDLE ? 16 : size;
    if (raw) { /* one message in flight: nothing else is ever queued */
        c->ext = mode == M_UPLOAD ? payload - 8 : payload; /* the length is in front */
        c->off = 0;
        c->len = mode == M_UPLOAD ? n + 8 : n;
    } else {
        append_frame(c, 2, payload, n);
    }
    return flush(c);
}

/* Rate mode: the intended send time of message `seq` of connection `c`. The connections
   send in turn, so the sends of all of them are evenly spaced. */
static double intended_at(const conn_t *c, uint64_t seq) {
    return rate_start + (double)(seq * (uint64_t)nconn + (uint64_t)(c - conns)) * rate_step;
}

static void stamp_of(const conn_t *c, uint64_t seq, uint8_t out[STAMP]) {
    double intended = intended_at(c, seq);
    memcpy(out, &seq, 8);
    memcpy(out + 8, &intended, 8);
}

/* Rate mode: send message `seq`; the first STAMP bytes of `payload` are scratch (the
   echo's are checked against the stamp rebuilt from its sequence number). */
static int send_stamped(conn_t *c, uint64_t seq) {
    stamp_of(c, seq, payload);
    if (!c->inflight) c->deadline = intended_at(c, seq) + MESSAGE_TIMEOUT;
    c->inflight++;
    append_frame(c, 2, payload, size);
    return flush(c);
}

/* Whether `take` echoed bytes at `c->moff` are what was sent. */
static int echo_matches(const conn_t *c, const uint8_t *p, size_t take) {
    size_t off = (size_t)c->moff;
    if (off + take > (mode == M_IDLE ? 16 : size)) return 0;
    if (mode == M_RATE && off < STAMP) {
        uint8_t stamp[STAMP];
        stamp_of(c, c->seq_recv, stamp);
        size_t head = take < STAMP - off ? take : STAMP - off;
        if (memcmp(stamp + off, p, head)) return 0;
        off += head, p += head, take -= head;
    }
    return !memcmp(payload + off, p, take);
}

static int start_close(conn_t *c) {
    if (raw) {
        conn_close(c, 0);
        return -1;
    }
    static const uint8_t code[2] = {0x03, 0xE8}; /* 1000 */
    append_frame(c, 8, code, 2);
    c->state = S_CLOSING;
    c->deadline = now() + CLOSE_TIMEOUT;
    return flush(c);
}

static void conn_open(conn_t *c) {
    c->off = c->len = 0;
    c->ext = NULL;
    c->hlen = c->phlen = c->inpay = c->ctllen = c->acklen = 0;
    c->mop = -1;
    c->moff = 0;
    c->inflight = c->opened = c->idle_done = 0;
    c->seq_recv = 0;
    c->gen++;
    c->counted_open = 1;
    opening++;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        error_at(E_CONNECT, strerror(errno));
        c->state = S_FREE;
        open_settled(c, 1);
        app_closed(c, 1);
        return;
    }
    n_active++;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->state = S_CONNECTING;
    c->deadline = now() + OPEN_TIMEOUT;
    c->events = EPOLLOUT;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        conn_fail(c, E_CONNECT, strerror(errno));
    }
}

static void on_connected(conn_t *c) {
    if (raw) {
        c->state = S_OPEN;
        c->opened = 1;
        open_settled(c, 0);
        ep_set(c, EPOLLIN);
        app_open(c);
        return;
    }
    uint8_t nonce[16];
    char key[32];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = prng();
        memcpy(nonce + i, &r, 8);
    }
    base64(nonce, 16, key);
    accept_value(key, c->accept);
    ensure(c, 512);
    c->len += (size_t)snprintf((char *)c->out + c->len, 512,
                               "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                               "Sec-WebSocket-Version: 13\r\n\r\n",
                               path, port, key);
    c->state = S_HANDSHAKE;
    flush(c);
}

/* Feed received bytes to the frame parser. Returns -1 if the connection was closed. */
static int feed(conn_t *c, const uint8_t *p, size_t n) {
    if (raw && mode == M_UPLOAD) {
        if (!c->inflight || c->acklen + n >= sizeof c->ack) {
            conn_fail(c, E_PROTOCOL, "unexpected bytes");
            return -1;
        }
        memcpy(c->ack + c->acklen, p, n);
        c->acklen += (int)n;
        if (c->acklen >= ack_len) return app_message(c);
        return 0;
    }
    if (raw) {
        if (!c->inflight || c->moff + n > (mode == M_IDLE ? 16 : size)) {
            conn_fail(c, E_PROTOCOL, "unexpected bytes");
            return -1;
        }
        if (memcmp(payload + c->moff, p, n)) {
            conn_fail(c, E_MISMATCH, "echo differs");
            return -1;
        }
        c->moff += n;
        if (c->moff == (mode == M_IDLE ? 16 : size)) return app_message(c);
        return 0;
    }
    while (n > 0) {
        if (!c->inpay) {
            while (c->phlen < 2 && n) c->ph[c->phlen++] = *p++, n--;
            if (c->phlen < 2) return 0;
            int len7 = c->ph[1] & 0x7f;
            if (c->ph[1] & 0x80) {
                conn_fail(c, E_PROTOCOL, "masked server frame");
                return -1;
            }
            int hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0);
            while (c->phlen < hl && n) c->ph[c->phlen++] = *p++, n--;
            if (c->phlen < hl) return 0;
            uint64_t len = (uint64_t)len7;
            if (len7 == 126) len = (uint64_t)c->ph[2] << 8 | c->ph[3];
            else if (len7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) len = len << 8 | c->ph[2 + i];
            }
            c->fop = c->ph[0] & 0x0f;
            c->ffin = c->ph[0] >> 7;
            c->phlen = 0;
            if (c->ph[0] & 0x70) {
                conn_fail(c, E_PROTOCOL, "RSV bit set");
                return -1;
            }
            if (c->fop >= 8) {
                if (!c->ffin || len > 125 || (c->fop != 8 && c->fop != 9 && c->fop != 10)) {
                    conn_fail(c, E_PROTOCOL, "bad control frame");
                    return -1;
                }
                c->ctllen = 0;
            } else if (c->fop == 0) {
                if (c->mop < 0) {
                    conn_fail(c, E_PROTOCOL, "continuation without a message");
                    return -1;
                }
            } else if (c->fop == 1 || c->fop == 2) {
                if (c->mop >= 0) {
                    conn_fail(c, E_PROTOCOL, "new message inside a fragmented one");
                    return -1;
                }
                c->mop = c->fop;
                c->moff = 0;
            } else {
                conn_fail(c, E_PROTOCOL, "reserved opcode");
                return -1;
            }
            c->rem = len;
            c->inpay = 1;
        }
        size_t take = c->rem < n ? (size_t)c->rem : n;
        if (c->fop >= 8) {
            memcpy(c->ctl + c->ctllen, p, take);
            c->ctllen += (int)take;
        } else if (c->state == S_OPEN) {
            if (mode == M_UPLOAD) {
                for (size_t i = 0; i < take; i++)
                    if (c->acklen < (int)sizeof c->ack - 1) c->ack[c->acklen++] = (char)p[i];
            } else if (!echo_matches(c, p, take)) {
                conn_fail(c, E_MISMATCH, "echo differs from what was sent");
                return -1;
            }
            c->moff += take;
        }
        p += take, n -= take, c->rem -= take;
        if (c->rem) return 0;
        c->inpay = 0;
        /* a frame is complete */
        if (c->fop == 9) { /* ping: answer unless closing */
            if (c->state == S_OPEN) {
                append_frame(c, 10, c->ctl, (size_t)c->ctllen);
                if (flush(c) < 0) return -1;
            }
        } else if (c->fop == 8) {
            if (c->state == S_CLOSING) {
                c->state = S_WAIT_EOF;
            } else if (c->state == S_OPEN) {
                char what[64];
                int code = c->ctllen >= 2 ? c->ctl[0] << 8 | c->ctl[1] : 1005;
                snprintf(what, sizeof what, "close code %d", code);
                error_at(E_SERVER_CLOSE, what);
                append_frame(c, 8, c->ctl, c->ctllen >= 2 ? 2 : 0);
                c->state = S_WAIT_EOF;
                c->deadline = now() + CLOSE_TIMEOUT;
                if (flush(c) < 0) return -1;
            }
        } else if (c->fop < 8 && c->ffin) {
            int op = c->mop;
            c->mop = -1;
            if (c->state == S_OPEN) {
                if (mode == M_HANDSHAKE || !c->inflight) {
                    conn_fail(c, E_PROTOCOL, "unexpected message");
                    return -1;
                }
                if (op != (mode == M_UPLOAD ? 1 : 2)) {
                    conn_fail(c, E_MISMATCH, "wrong message type");
                    return -1;
                }
                if (app_message(c) < 0) return -1;
            }
        }
    }
    return 0;
}

static void on_eof(conn_t *c) {
    if (c->state == S_WAIT_EOF) conn_close(c, 0);
    else if (c->state == S_CLOSING) conn_fail(c, E_EOF, "FIN before the server's close frame");
    else conn_fail(c, E_EOF, c->state == S_HANDSHAKE ? "FIN during the handshake" : "FIN while open");
}

static int handshake_read(conn_t *c) {
    for (;;) {
        ssize_t n = recv(c->fd, c->hbuf + c->hlen, HBUF_SIZE - 1 - c->hlen, 0);
        if (n == 0) {
            on_eof(c);
            return -1;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
            conn_fail(c, E_IO, strerror(errno));
            return -1;
        }
        c->hlen += (int)n;
        c->hbuf[c->hlen] = 0;
        char *end = memmem(c->hbuf, (size_t)c->hlen, "\r\n\r\n", 4);
        if (!end) {
            if (c->hlen >= HBUF_SIZE - 1) {
                conn_fail(c, E_HANDSHAKE, "response head too long");
                return -1;
            }
            continue;
        }
        if (strncmp(c->hbuf, "HTTP/1.1 101 ", 13) && strncmp(c->hbuf, "HTTP/1.1 101\r", 13)) {
            char what[64];
            snprintf(what, sizeof what, "status line %.40s", c->hbuf);
            char *cr = strchr(what, '\r');
            if (cr) *cr = 0;
            conn_fail(c, E_HANDSHAKE, what);
            return -1;
        }
        int ok = 0;
        for (char *line = strstr(c->hbuf, "\r\n"); line && line < end; line = strstr(line + 2, "\r\n")) {
            if (!strncasecmp(line + 2, "Sec-WebSocket-Accept:", 21)) {
                char *v = line + 23;
                while (*v == ' ' || *v == '\t') v++;
                size_t al = strlen(c->accept);
                ok = !strncmp(v, c->accept, al) && (v[al] == '\r' || v[al] == ' ');
                break;
            }
        }
        if (!ok) {
            conn_fail(c, E_HANDSHAKE, "missing or wrong Sec-WebSocket-Accept");
            return -1;
        }
        c->state = S_OPEN;
        c->opened = 1;
        open_settled(c, 0);
        unsigned gen = c->gen;
        size_t rest = (size_t)(c->hbuf + c->hlen - (end + 4));
        app_open(c);
        if (c->gen != gen || c->state == S_FREE) return -1;
        if (rest && feed(c, (const uint8_t *)end + 4, rest) < 0) return -1;
        return 0;
    }
}

static void on_readable(conn_t *c) {
    if (c->state == S_HANDSHAKE) {
        if (handshake_read(c) < 0) return;
        if (c->state == S_HANDSHAKE) return;
    }
    for (;;) {
        ssize_t n = recv(c->fd, rbuf, RBUF_SIZE, 0);
        if (n > 0) {
            if (feed(c, rbuf, (size_t)n) < 0) return;
            if (n < RBUF_SIZE) return;
            continue;
        }
        if (n == 0) {
            on_eof(c);
            return;
        }
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) conn_fail(c, E_IO, strerror(errno));
        return;
    }
}

static void on_event(conn_t *c, uint32_t ev) {
    if (c->state == S_FREE) return;
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) conn_fail(c, E_CONNECT, strerror(err));
        else if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_connected(c);
        return;
    }
    unsigned gen = c->gen;
    if ((ev & EPOLLOUT) && flush(c) < 0) return;
    if (c->gen != gen || c->state == S_FREE) return;
    if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
}

/* ---- what each mode does with a connection ---- */

static void app_open(conn_t *c) {
    n_opened++;
    if (mode == M_HANDSHAKE) start_close(c);
    else if (mode == M_RATE && !stopping) return; /* pump_sends() sends */
    else if (!stopping) send_message(c);
    else start_close(c);
}

static int app_message(conn_t *c) {
    double t = now();
    if (mode == M_RATE) {
        if (c->moff != size) {
            conn_fail(c, E_MISMATCH, "echo shorter than what was sent");
            return -1;
        }
        if (in_window) record(&latency, t - intended_at(c, c->seq_recv));
        done_count++;
        c->seq_recv++;
        c->moff = 0;
        if (--c->inflight) c->deadline = intended_at(c, c->seq_recv) + MESSAGE_TIMEOUT;
        else if (stopping) return start_close(c);
        return 0;
    }
    c->inflight = 0;
    if (mode == M_UPLOAD) {
        char want[32];
        snprintf(want, sizeof want, "%zu", size);
        if (c->acklen != (int)strlen(want) || memcmp(c->ack, want, (size_t)c->acklen)) {
            conn_fail(c, E_MISMATCH, "wrong ack");
            return -1;
        }
    }
    if (mode != M_UPLOAD && c->moff != (mode == M_IDLE ? 16 : size)) {
        conn_fail(c, E_MISMATCH, "echo shorter than what was sent");
        return -1;
    }
    if (mode == M_IDLE) {
        c->idle_done = 1;
        n_idle_done++;
        return 0;
    }
    if (in_window) record(&latency, t - c->sent);
    done_count++;
    if (stopping) return start_close(c);
    c->moff = 0;
    return send_message(c);
}

static void app_closed(conn_t *c, int failed) {
    if (mode == M_HANDSHAKE) {
        if (!failed) done_count++;
        if (!stopping && errors[E_CONNECT] < 100000) { /* reopened from the loop, not from here */
            c->restart = 1;
            n_restart++;
        }
    }
}

/* ---- the loop ---- */

static void pump_opens(void) {
    if (n_restart && !stopping) {
        n_restart = 0;
        for (int i = 0; i < nconns_alloc; i++)
            if (conns[i].restart) {
                conns[i].restart = 0;
                conn_open(&conns[i]);
            }
    }
    while (opening < open_limit && open_next < open_end) conn_open(&conns[open_next++]);
}

static void check_deadlines(double t) {
    for (int i = 0; i < nconns_alloc; i++) {
        conn_t *c = &conns[i];
        switch (c->state) {
        case S_CONNECTING:
        case S_HANDSHAKE:
            if (t > c->deadline) conn_fail(c, E_TIMEOUT, "no 101 in time");
            break;
        case S_OPEN:
            if (c->inflight && t > c->deadline) conn_fail(c, E_TIMEOUT, "no reply in time");
            break;
        case S_CLOSING:
        case S_WAIT_EOF:
            if (t > c->deadline) conn_fail(c, E_CLOSE_TIMEOUT, "closing handshake not finished in time");
            break;
        }
    }
}

/* Rate mode: send every message that is due, then set the timer for the next one. A
   late client (a busy core) sends what is due at once, each message with its own
   intended time: its lateness then counts in the latencies. */
static void pump_sends(double t) {
    double due = rate_start + (double)rate_slot * rate_step;
    while (due <= t) {
        conn_t *c = &conns[rate_slot % (uint64_t)nconn];
        if (c->state == S_OPEN) {
            if (in_window) record(&lateness, t - due);
            send_stamped(c, rate_slot / (uint64_t)nconn);
        }
        due = rate_start + (double)++rate_slot * rate_step;
    }
    struct itimerspec next = {0};
    next.it_value.tv_sec = (time_t)due;
    next.it_value.tv_nsec = (long)((due - (double)(time_t)due) * 1e9);
    if (!next.it_value.tv_sec && !next.it_value.tv_nsec) next.it_value.tv_nsec = 1;
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &next, NULL);
}

static void start_sending(void) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake up on time, not up to 50 us late */
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
    rate_step = 1.0 / (send_rate * nconn);
    rate_start = now();
    rate_slot = 0;
}

typedef int (*cond_fn)(void);
static int cond_never(void) { return 0; }
static int cond_all_settled(void) { return open_next >= open_end && opening == 0; }
static int cond_none_active(void) { return n_active == 0; }
static int idle_target;
static int cond_idle(void) { return n_idle_done + n_open_failed >= idle_target; }

/* Serve events until cond() holds (returns 1) or `until` passes (returns 0). */
static int run_until(cond_fn cond, double until) {
    static struct epoll_event evs[1024];
    static double last_check;
    for (;;) {
        pump_opens();
        if (cond()) return 1;
        double t = now();
        if (tfd >= 0 && !stopping) pump_sends(t);
        if (t >= until) return 0;
        if (t - last_check > 0.1) {
            check_deadlines(t);
            last_check = t;
            if (cond()) return 1;
        }
        double wait = until - t;
        if (wait > 0.1) wait = 0.1;
        int ms = (int)(wait * 1000.0 + 0.999);
        int n = epoll_wait(ep, evs, 1024, ms);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                on_event((conn_t *)evs[i].data.ptr, evs[i].events);
            } else { /* the rate mode's timer: pump_sends() runs at the top of the loop */
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) abort();
            }
        }
    }
}

static void close_all(double timeout) {
    stopping = 1;
    for (int i = 0; i < nconns_alloc; i++) {
        conn_t *c = &conns[i];
        if (c->state == S_OPEN && !c->inflight) start_close(c);
    }
    if (!run_until(cond_none_active, now() + timeout)) {
        for (int i = 0; i < nconns_alloc; i++)
            if (conns[i].state != S_FREE) conn_fail(&conns[i], E_CLOSE_TIMEOUT, "still open at exit");
    }
}

static void open_batch(int from, int to, int limit) {
    open_next = from, open_end = to, open_limit = limit;
    n_opened = n_open_failed = n_idle_done = 0;
}

static uint64_t total_errors(void) {
    uint64_t s = 0;
    for (int i = 0; i < E_COUNT; i++) s += errors[i];
    return s;
}

static void print_result(const snap_t *a, const snap_t *b, int opened) {
    const char *names[] = {"echo", "handshake", "upload", "idle", "rate"};
    double secs = b->t - a->t;
    uint64_t count = b->count - a->count;
    double rate = secs > 0 ? count / secs : 0;
    double scpu = (a->server_cpu >= 0 && b->server_cpu >= 0) ? b->server_cpu - a->server_cpu : -1;
    printf("result {\"mode\": \"%s\", \"raw\": %d, \"connections\": %d, \"size\": %zu, "
           "\"seconds\": %.4f, \"count\": %llu, \"rate\": %.2f, \"mb_per_s\": %.3f, "
           "\"server_cpu_s\": %.3f, \"server_cpu_pct\": %.1f, \"client_cpu_pct\": %.1f, "
           "\"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, "
           "\"max_us\": %.1f, \"opened\": %d, \"errors\": %llu",
           names[mode], raw, nconn, size, secs, (unsigned long long)count, rate,
           mode == M_HANDSHAKE ? 0.0 : rate * (double)size / 1e6, scpu,
           scpu >= 0 && secs > 0 ? 100.0 * scpu / secs : -1.0,
           secs > 0 ? 100.0 * (b->client_cpu - a->client_cpu) / secs : -1.0,
           percentile(&latency, 0.50), percentile(&latency, 0.90), percentile(&latency, 0.99),
           percentile(&latency, 0.999), latency.max, opened, (unsigned long long)total_errors());
    if (mode == M_RATE)
        printf(", \"rate_per_conn\": %.3f, \"late_p99_us\": %.1f, \"late_max_us\": %.1f", send_rate,
               percentile(&lateness, 0.99), lateness.max);
    printf(", \"error_kinds\": {");
    int first = 1;
    for (int i = 0; i < E_COUNT; i++)
        if (errors[i]) {
            printf("%s\"%s\": %llu", first ? "" : ", ", ERROR_NAMES[i], (unsigned long long)errors[i]);
            first = 0;
        }
    printf("}, \"first_error\": \"");
    for (const char *s = first_error; *s; s++)
        if (*s != '"' && *s != '\\' && (unsigned char)*s >= 32) putchar(*s);
    printf("\"}\n");
    fflush(stdout);
}

static void usage(void) {
    fprintf(stderr, "usage: loadclient -m echo|handshake|upload|idle|rate -P port [-c n] [-s size] "
                    "[-r rate] [-w warmup] [-d duration] [-H hold] [-u path] [-p server_pid] "
                    "[-L open_limit] [-R]\n");
    exit(2);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "m:P:c:s:r:w:d:H:u:p:L:R")) != -1) {
        switch (opt) {
        case 'm':
            if (!strcmp(optarg, "echo")) mode = M_ECHO;
            else if (!strcmp(optarg, "handshake")) mode = M_HANDSHAKE;
            else if (!strcmp(optarg, "upload")) mode = M_UPLOAD;
            else if (!strcmp(optarg, "idle")) mode = M_IDLE;
            else if (!strcmp(optarg, "rate")) mode = M_RATE;
            else usage();
            break;
        case 'P': port = atoi(optarg); break;
        case 'c': nconn = atoi(optarg); break;
        case 's': size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'r': send_rate = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'H': hold = atof(optarg); break;
        case 'u': path = optarg; break;
        case 'p': server_pid = atoi(optarg); break;
        case 'L': open_limit = atoi(optarg); break;
        case 'R': raw = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || port > 65535 || nconn < 1 || nconn > 100000 ||
        size > (mode == M_UPLOAD ? (size_t)4 << 30 : (size_t)256 << 20) ||
        warmup < 0 || duration <= 0 || duration > 3600 || hold < 0 || hold > 600 || open_limit < 1 ||
        (raw && mode == M_HANDSHAKE) ||
        (mode == M_RATE && (raw || size < STAMP || !(send_rate > 0) || send_rate * nconn > 1e7)))
        usage();
    if (mode == M_UPLOAD && !strcmp(path, "/")) path = "/ack";

    /* self-test of the Sec-WebSocket-Accept computation (RFC 6455 section 1.3) */
    char check[32];
    accept_value("dGhlIHNhbXBsZSBub25jZQ==", check);
    if (strcmp(check, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")) {
        fprintf(stderr, "SHA-1 self-test failed: %s\n", check);
        return 2;
    }

    /* the last resort bound on run time */
    signal(SIGPIPE, SIG_IGN);
    alarm((unsigned)(warmup + duration + hold + 180));
    struct rlimit rl;
    if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrandom(&prng_state, sizeof prng_state, 0) != sizeof prng_state || !prng_state)
        prng_state = (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();

    size_t psize = size > 16 ? size : 16;
    uint8_t *block = malloc(psize + 8);
    payload = block ? block + 8 : NULL; /* 8 bytes in front for a raw upload's length */
    latency.bucket = calloc(HIST_BUCKETS, sizeof *latency.bucket);
    lateness.bucket = calloc(HIST_BUCKETS, sizeof *lateness.bucket);
    for (size_t i = 0; payload && i < psize; i += 8) {
        uint64_t r = prng();
        memcpy(payload + i, &r, psize - i < 8 ? psize - i : 8);
    }
    if (payload) {
        payload[0] |= 1; /* a raw echo never starts with the zero byte of a raw upload */
        for (int i = 0; i < 8; i++) block[i] = (uint8_t)((uint64_t)size >> (56 - 8 * i));
    }
    ack_len = snprintf(NULL, 0, "%zu", size);
    nconns_alloc = mode == M_IDLE ? (nconn > 20 ? nconn : 20) : nconn;
    conns = calloc((size_t)nconns_alloc, sizeof *conns);
    if (!payload || !latency.bucket || !lateness.bucket || !conns) {
        fprintf(stderr, "out of memory\n");
        return 2;
    }
    for (int i = 0; i < nconns_alloc; i++) conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);

    snap_t a, b;
    snapshot(&a);
    if (mode == M_IDLE) {
        /* warm the server up, then let run.py read its baseline */
        open_batch(0, 20, 20);
        idle_target = 20;
        if (!run_until(cond_idle, now() + 30) || n_open_failed) {
            fprintf(stderr, "warm-up connections failed: %s\n", first_error);
            return 2;
        }
        close_all(10);
        stopping = 0;
        printf("base\n");
        fflush(stdout);
        run_until(cond_never, now() + 1.0);
        double t0 = now();
        open_batch(0, nconn, open_limit);
        idle_target = nconn;
        int ok = run_until(cond_idle, now() + 120);
        int held = n_idle_done;
        printf("held %d %.3f\n", held, now() - t0);
        fflush(stdout);
        snapshot(&a);
        run_until(cond_never, now() + hold);
        snapshot(&b);
        close_all(15);
        nconn = held;
        print_result(&a, &b, held);
        return ok && held == idle_target ? 0 : 2;
    }

    if (mode == M_HANDSHAKE) {
        for (int i = 0; i < nconn; i++) conn_open(&conns[i]);
    } else {
        open_batch(0, nconn, nconn > open_limit ? open_limit : nconn);
        if (!run_until(cond_all_settled, now() + 30) || n_open_failed) {
            fprintf(stderr, "could not open the connections: %s\n", first_error);
            close_all(2);
            print_result(&a, &a, n_opened);
            return 2;
        }
    }
    if (mode == M_RATE) start_sending();
    run_until(cond_never, now() + warmup);
    snapshot(&a);
    in_window = 1;
    run_until(cond_never, a.t + duration);
    in_window = 0;
    snapshot(&b);
    close_all(10);
    print_result(&a, &b, n_opened);
    return 0;
}

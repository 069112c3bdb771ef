/*
 * raw_c_server: the floor below the floor, a TCP echo and upload sink in C.
 *
 *   raw_c_server --port P
 *
 * The same protocol as raw_tcp_server.py, without Python or an event loop
 * library: one thread, one epoll set, level-triggered, 127.0.0.1 only. A
 * connection whose first byte is zero is an upload (each message an 8-byte
 * big-endian length and the payload, counted and answered with its length as
 * text); any other connection is echoed. bench/run.py compiles it with
 * `gcc -O2` into a temporary directory, as it does the load client.
 *
 * An echo connection that cannot write all it read stops reading until its
 * buffer drains (backpressure, nothing buffered without bound).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF (256 * 1024) /* one read, as uvloop's */

typedef struct {
    int fd;
    int kind;          /* 0: not yet known, 1: echo, 2: upload */
    size_t off, len;   /* echo: bytes of buf still to write back */
    uint8_t header[8]; /* upload: the length being read */
    int have;          /* upload: bytes of header read */
    uint64_t length, left;
    uint8_t buf[BUF];
} conn_t;

static volatile sig_atomic_t stop;

static void on_signal(int signum) {
    (void)signum;
    stop = 1;
}

static void drop(int ep, conn_t *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c);
}

static void watch(int ep, conn_t *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Write back what is pending; 0 when drained, 1 when the socket is full, -1 on error. */
static int flush(conn_t *c) {
    while (c->off < c->len) {
        ssize_t n = write(c->fd, c->buf + c->off, c->len - c->off);
        if (n < 0) return errno == EAGAIN ? 1 : -1;
        c->off += (size_t)n;
    }
    c->off = c->len = 0;
    return 0;
}

/* Count an upload's bytes; answer each message's length once it is all in. */
static int consume(conn_t *c, const uint8_t *data, size_t n) {
    size_t pos = 0;
    while (pos < n) {
        if (!c->left) {
            while (c->have < 8 && pos < n) c->header[c->have++] = data[pos++];
            if (c->have < 8) return 0;
            c->length = 0;
            for (int i = 0; i < 8; i++) c->length = c->length << 8 | c->header[i];
            c->left = c->length;
            c->have = 0;
        }
        size_t take = n - pos < c->left ? n - pos : (size_t)c->left;
        pos += take;
        c->left -= take;
        if (!c->left) {
            char ack[24];
            int len = snprintf(ack, sizeof ack, "%llu", (unsigned long long)c->length);
            if (write(c->fd, ack, (size_t)len) != len) return -1; /* a few bytes: never full */
        }
    }
    return 0;
}

static int readable(int ep, conn_t *c) {
    ssize_t n = read(c->fd, c->buf, BUF);
    if (n <= 0) return n < 0 && errno == EAGAIN ? 0 : -1;
    if (!c->kind) c->kind = c->buf[0] == 0 ? 2 : 1;
    if (c->kind == 2) return consume(c, c->buf, (size_t)n);
    c->off = 0;
    c->len = (size_t)n;
    int full = flush(c);
    if (full == 1) watch(ep, c, EPOLLOUT); /* stop reading until the echo drains */
    return full < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    int port = 0;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
    if (port <= 0) {
        fprintf(stderr, "usage: raw_c_server --port P\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) || listen(lfd, 1024)) {
        perror("listen");
        return 2;
    }
    int ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);
    printf("ready pid=%d raw C\n", (int)getpid());
    fflush(stdout);
    struct epoll_event events[256];
    while (!stop) {
        int ready = epoll_wait(ep, events, 256, 200);
        for (int i = 0; i < ready; i++) {
            conn_t *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn_t *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
                }
                continue;
            }
            int failed;
            if (events[i].events & EPOLLOUT) {
                failed = flush(c);
                if (!failed) watch(ep, c, EPOLLIN);
                failed = failed < 0;
            } else {
                failed = readable(ep, c) < 0;
            }
            if (failed || (events[i].events & (EPOLLERR | EPOLLHUP) && c->len == 0)) drop(ep, c);
        }
    }
    return 0;
}

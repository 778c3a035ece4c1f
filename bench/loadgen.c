/* The benchmark's load generator: SSE subscribers read on one epoll loop, HTTP publishers on another in
 * a thread of their own, in C, so that the generator is never what limits a run. Built by the benchmark
 * with the system's cc.
 *
 * Subscribers GET `path` (with %d replaced by subscriber % topics) and count events by their data line,
 * "data: <seq> <t_ns> <padding>": seq says which event it is (event seq goes to topic seq % topics), t_ns
 * when it was published (CLOCK_MONOTONIC), for latency. Per subscriber it checks order and counts lost
 * and duplicated events. The publishers POST JSON batches over keep-alive connections, pipelined (a batch
 * of one: the event's JSON object alone, as one publishes one event), with --auth TOKEN as a Bearer
 * token; with
 * more publishers than topics, every publisher publishes to every topic, and order is checked per
 * publisher (the hub orders concurrent publishers' events as it accepts them).
 * With --proto nchan, it speaks Nchan's protocol instead (the benchmark's third reference server):
 * subscribers GET /sub/t<N>, and each event is a request of its own, POST /pub/t<N> with the event's data
 * as its body, since Nchan has no batch publish; a batch scenario's B events per request and D requests in
 * flight become B x D one-event requests in flight. Any 2xx answers a publish (Nchan: 201, or 202 when the
 * channel has no subscriber). Nchan's frames carry an id: line before the data: line, which is skipped.
 * With --proto binary, each event is a binary publish of its own (the hub's `application/octet-stream`):
 * POST /publish?topic=t<N> with the bytes "<seq> <t_ns> <padding>" as the body, as a service sending a
 * frame or a chunk does; subscribers read SSE as ever, and decode each data line from base64 first.
 * With --read-window-ms W (throughput scenarios), the generator lets frames pile up in the kernel between
 * read rounds, so that one read (and the ACK it sends) serves several frames: it then costs a fraction of
 * the CPU per delivered event, and latency figures include up to W ms of that wait.
 * Prints one JSON object. Options: see usage().
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { SUB = 1, PUB = 2 };

typedef struct {
    int kind, fd, topic, connected;
    long long *expected_next, received, dup, reordered; /* expected_next: one per lane */
    char *buf; size_t len, cap;       /* unparsed input */
    int headers_done;
    long long in_flight, sent, answered, next; /* publisher: next = its next candidate seq */
    int index;
} conn_t;

static long long now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage ru; getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static int cmp_ll(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return (x > y) - (x < y);
}

static const char *host = "127.0.0.1", default_path[] = "/events?topic=t%d", *path = default_path;
static const char *pub_path = "/publish";
static int port = 8080, subs = 100, topics = 1, batch = 1, pipeline = 8, pubconns = 1, size = 64;
static long long events = 1000, rate = 0; /* rate: events per second, 0 = as fast as accepted */
static double timeout_s = 60, hold_s = 0;
static double await_s = 0; /* --await-event: after opening, wait this long for one event on every stream */
static int source_ips = 1, split_port = 0; /* split_port: odd subscribers go there */
static const char *source_from; /* --source-from: the first source address (of --source-ips) */
static long long *lat; static long long nlat, caplat;
static int lanes = 1; /* publishers each topic has: 1, or pubconns when they outnumber the topics */
static long long published, reads, delivered;
static double read_window_ms = 0; /* 0: read every ready connection at once (latency scenarios) */
static int nchan = 0; /* --proto nchan: Nchan's paths, one raw event per publish request */
static int binary = 0; /* --proto binary: the hub's binary publishes, one event per request */
static const char *auth = NULL; /* --auth TOKEN: publishers send it as a Bearer token */

static void usage(void) {
    fprintf(stderr, "loadgen --port P --subs N --topics T --events M [--batch B] [--pipeline D]"
                    " [--rate R] [--size S] [--timeout S] [--hold S] [--path /events?topic=t%%d]"
                    " [--pubconns K] [--source-ips K] [--read-window-ms W] [--proto hub|nchan|binary] [--auth TOKEN]"
                    " [--await-event S] [--source-from A.B.C.D]\n");
    exit(2);
}

static int connect_to(int index, int to_port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source_from) {
        /* Several generators side by side, each on addresses of its own; the port is chosen at
         * connect() by the whole address pair, not by bind() searching the ports bound to the
         * address, which grows slower with every connection (and fails once TIME_WAITs hold them). */
        struct sockaddr_in src = {.sin_family = AF_INET};
        if (inet_pton(AF_INET, source_from, &src.sin_addr) != 1) { fprintf(stderr, "bad --source-from\n"); exit(2); }
        src.sin_addr.s_addr = htonl(ntohl(src.sin_addr.s_addr) + (uint32_t)(index % source_ips));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { perror("bind"); exit(1); }
    } else if (source_ips > 1) { /* more than ~28k connections need more than one source address */
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001 + 1 + index % source_ips);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) { perror("bind"); exit(1); }
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(to_port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
        perror("connect"); exit(1);
    }
    return fd;
}

static void send_all(int fd, const char *data, size_t n) {
    while (n) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EAGAIN) { struct timespec t = {0, 100000}; nanosleep(&t, NULL); continue; }
            perror("write"); exit(1);
        }
        data += w; n -= (size_t)w;
    }
}

static char *pad;
/* Several publisher connections split the topics between them (topic % pubconns), so each topic's
 * events come from one connection, in order; when they outnumber the topics, they take turns on every
 * topic instead (seq / topics % pubconns), and each publisher's events on a topic keep their order. */
static int publisher_of(long long seq) {
    return (int)(lanes > 1 ? (seq / topics) % pubconns : (seq % topics) % pubconns);
}

/* Nchan: the publisher's next event alone, its data as the body, to its topic's channel. */
static void publish_one(conn_t *c) {
    static char *req;
    if (!req) req = malloc((size_t)size + 1024 + (auth ? strlen(auth) : 0));
    while (c->next < events && publisher_of(c->next) != c->index) c->next++;
    if (c->next >= events) return; /* this publisher's topics are all published */
    long long seq = c->next++;
    char data[64]; /* what precedes the padding: "<seq> <t_ns> " */
    int d = snprintf(data, sizeof data, "%lld %lld ", seq, now_ns());
    int h = binary
        ? sprintf(req, "POST /publish?topic=t%lld HTTP/1.1\r\nHost: x\r\n"
                       "Content-Type: application/octet-stream\r\n%s%s%sContent-Length: %d\r\n\r\n%s%s",
                  seq % topics, auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "",
                  d + size, data, pad)
        : sprintf(req, "POST /pub/t%lld HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s%s",
                  seq % topics, d + size, data, pad);
    send_all(c->fd, req, (size_t)h);
    c->in_flight++; c->sent++;
    published++;
}

static void publish_batch(conn_t *c) {
    static char body[1 << 22], req[(1 << 22) + 512];
    if (nchan || binary) { publish_one(c); return; }
    size_t b = 0;
    int n = 0;
    body[b++] = '[';
    while (n < batch && c->next < events) {
        long long seq = c->next++;
        if (publisher_of(seq) != c->index) continue;
        b += (size_t)sprintf(body + b, "%s{\"topic\":\"t%lld\",\"data\":\"%lld %lld %s\"}",
                             n ? "," : "", seq % topics, seq, now_ns(), pad);
        n++;
    }
    if (n == 0) return; /* this publisher's topics are all published */
    body[b++] = ']';
    char *json = body;
    if (batch == 1) { json++; b -= 2; } /* one event per request: the event itself, not a batch of one */
    int h = sprintf(req, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "%s%s%sContent-Length: %zu\r\n\r\n", pub_path,
                    auth ? "Authorization: Bearer " : "", auth ? auth : "", auth ? "\r\n" : "", b);
    memcpy(req + h, json, b);
    send_all(c->fd, req, (size_t)h + b);
    c->in_flight++; c->sent++;
    published += n;
}

static void pump_publishers(conn_t *conns, long long t0) {
    long long now = now_ns();
    for (int i = 0; i < pubconns; i++) {
        conn_t *c = &conns[subs + i];
        while (c->next < events && c->in_flight < pipeline &&
               (rate == 0 || published < (now - t0) * rate / 1000000000LL))
            publish_batch(c);
    }
}

typedef struct {
    conn_t *conns;
    int ep, stop;
    long long t0, t_published;
} publisher_t;

static void on_readable(conn_t *c);

/* The publisher thread: keeps every publisher's pipeline full (or the rate), until all is answered. */
static void *publisher_main(void *arg) {
    publisher_t *p = arg;
    struct epoll_event evs[64];
    while (!__atomic_load_n(&p->stop, __ATOMIC_ACQUIRE)) {
        pump_publishers(p->conns, p->t0);
        if (published >= events) {
            int answered_all = 1;
            for (int i = 0; i < pubconns; i++) answered_all &= p->conns[subs + i].in_flight == 0;
            if (answered_all) { __atomic_store_n(&p->t_published, now_ns(), __ATOMIC_RELEASE); break; }
        }
        int n = epoll_wait(p->ep, evs, 64, rate ? 1 : 10);
        for (int k = 0; k < n; k++) on_readable(evs[k].data.ptr);
    }
    return NULL;
}

static void take_latency(long long t) {
    if (nlat == caplat) { caplat = caplat ? caplat * 2 : 1 << 20; lat = realloc(lat, (size_t)caplat * 8); }
    lat[nlat++] = t;
}

/* The start of base64 `in` (up to a line end), decoded into `out` (cap bytes, NUL-terminated): enough of a
 * binary event's data for its seq and t_ns. */
static void unbase64(const char *in, const char *end, char *out, size_t cap) {
    static signed char value[256];
    if (!value['B']) {
        memset(value, -1, sizeof value);
        const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int i = 0; i < 64; i++) value[(unsigned char)alphabet[i]] = (signed char)i;
    }
    size_t n = 0;
    unsigned bits = 0; int have = 0;
    for (; in < end && n + 1 < cap; in++) {
        int v = value[(unsigned char)*in];
        if (v < 0) break;
        bits = bits << 6 | (unsigned)v; have += 6;
        if (have >= 8) { have -= 8; out[n++] = (char)(bits >> have & 0xff); }
    }
    out[n] = 0;
}

/* Events are found by their "data: <seq> <t_ns>" line; chunk framing and other fields are skipped. */
static void parse_sub(conn_t *c) {
    char *p = c->buf, *end = c->buf + c->len;
    if (!c->headers_done) {
        char *h = memmem(p, c->len, "\r\n\r\n", 4);
        if (!h) return;
        if (strncmp(p, "HTTP/1.1 200", 12) != 0) { fprintf(stderr, "subscribe refused: %.400s\n", p); exit(1); }
        c->headers_done = 1; c->connected = 1; p = h + 4;
    }
    long long now = now_ns();
    for (;;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) break;
        if (nl - p > 6 && memcmp(p, "data: ", 6) == 0) {
            char *q = p + 6, decoded[64];
            if (binary) { unbase64(q, nl, decoded, sizeof decoded); q = decoded; }
            long long seq = strtoll(q, &q, 10);
            long long t = strtoll(q, &q, 10);
            long long step = (long long)topics * lanes;
            long long *expected = &c->expected_next[lanes > 1 ? publisher_of(seq) : 0];
            if (seq < *expected) {
                if (seq == *expected - step) c->dup++; else c->reordered++;
            } else {
                c->received++; delivered++;
                *expected = seq + step;
            }
            take_latency(now - t);
        }
        p = nl + 1;
    }
    c->len = (size_t)(end - p);
    memmove(c->buf, p, c->len);
}

static void parse_pub(conn_t *c) {
    char *p = c->buf, *end = c->buf + c->len;
    for (;;) { /* each answer: headers with Content-Length, then a body */
        char *h = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
        if (!h) break;
        if (strncmp(p, nchan ? "HTTP/1.1 2" : "HTTP/1.1 200", nchan ? 10 : 12) != 0) {
            fprintf(stderr, "publish refused: %.200s\n", p); exit(1);
        }
        char *cl = memmem(p, (size_t)(h - p), "Content-Length: ", 16);
        long n = cl ? strtol(cl + 16, NULL, 10) : 0;
        if (end - (h + 4) < n) break;
        p = h + 4 + n;
        c->in_flight--; c->answered++;
    }
    c->len = (size_t)(end - p);
    memmove(c->buf, p, c->len);
}

/* Level-triggered: one read per wake-up; what is left wakes us again. Half the syscalls of draining. */
static void on_readable(conn_t *c) {
    if (c->cap - c->len < 65536) { c->cap = c->cap * 2 + 65536; c->buf = realloc(c->buf, c->cap); }
    ssize_t r = read(c->fd, c->buf + c->len, c->cap - c->len);
    if (r == 0) { fprintf(stderr, "server closed a %s connection\n", c->kind == SUB ? "subscriber" : "publisher"); exit(1); }
    if (r < 0) { if (errno == EAGAIN) return; perror("read"); exit(1); }
    c->len += (size_t)r;
    if (c->kind == SUB) { reads++; parse_sub(c); } /* reads: the main thread's; publishers have theirs */
    else parse_pub(c);
}

/* --await-event: the streams are open; someone else publishes ONE event (its data "<seq> <t_ns>", t_ns
 * on this machine's CLOCK_MONOTONIC), and every stream should receive it. Says how many did, and how
 * long after t_ns the first and the last did. */
static int await_one_event(int ep, int opened, double connect_s) {
    struct epoll_event evs[1024];
    printf("{\"opened\": %d, \"connect_s\": %.3f}\n", opened, connect_s); fflush(stdout);
    long long until = now_ns() + (long long)(await_s * 1e9), first = 0, last = 0;
    int received = 0;
    while (received < subs && now_ns() < until) {
        int n = epoll_wait(ep, evs, 1024, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            long long had = c->received;
            on_readable(c);
            if (c->received && !had) received++;
        }
    }
    if (nlat) {
        qsort(lat, (size_t)nlat, 8, cmp_ll);
        first = lat[0]; last = lat[nlat - 1];
    }
    printf("{\"subscribers\": %d, \"received\": %d, \"frames\": %lld, \"first_ms\": %.3f, "
           "\"p50_ms\": %.3f, \"last_ms\": %.3f}\n", subs, received, nlat, first / 1e6,
           nlat ? lat[nlat / 2] / 1e6 : 0, last / 1e6);
    return received == subs ? 0 : 1;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--subs")) subs = atoi(v);
        else if (!strcmp(a, "--topics")) topics = atoi(v);
        else if (!strcmp(a, "--events")) events = atoll(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else if (!strcmp(a, "--pipeline")) pipeline = atoi(v);
        else if (!strcmp(a, "--pubconns")) pubconns = atoi(v);
        else if (!strcmp(a, "--rate")) rate = atoll(v);
        else if (!strcmp(a, "--size")) size = atoi(v);
        else if (!strcmp(a, "--timeout")) timeout_s = atof(v);
        else if (!strcmp(a, "--hold")) hold_s = atof(v);
        else if (!strcmp(a, "--path")) path = v;
        else if (!strcmp(a, "--auth")) auth = v;
        else if (!strcmp(a, "--source-ips")) source_ips = atoi(v);
        else if (!strcmp(a, "--split-port")) split_port = atoi(v);
        else if (!strcmp(a, "--read-window-ms")) read_window_ms = atof(v);
        else if (!strcmp(a, "--proto") && (!strcmp(v, "hub") || !strcmp(v, "nchan") || !strcmp(v, "binary"))) {
            nchan = !strcmp(v, "nchan"); binary = !strcmp(v, "binary");
        }
        else if (!strcmp(a, "--await-event")) await_s = atof(v);
        else if (!strcmp(a, "--source-from")) source_from = v;
        else usage();
        i++;
    }
    if (nchan) {
        if (path == default_path) path = "/sub/t%d";
    }
    if (nchan || binary) {
        pipeline *= batch; batch = 1; /* as many events in flight as the scenario's batches hold */
    }
    if (pubconns > topics) lanes = pubconns;
    pad = malloc((size_t)size + 1); memset(pad, 'x', (size_t)size); pad[size] = 0;
    int ep = epoll_create1(0);
    conn_t *conns = calloc((size_t)(subs + pubconns), sizeof(conn_t));
    char req[512];
    for (int i = 0; i < subs; i++) {
        conn_t *c = &conns[i];
        c->kind = SUB; c->topic = i % topics;
        c->expected_next = malloc((size_t)lanes * sizeof(long long));
        for (int l = 0; l < lanes; l++) c->expected_next[l] = c->topic + (long long)topics * l;
        c->fd = connect_to(i, split_port && i % 2 ? split_port : port);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    struct epoll_event evs[1024];
    /* connect and subscribe everyone, then wait until every stream is open */
    int opened = 0, requested = 0;
    long long start = now_ns();
    while (opened < subs) {
        int n = epoll_wait(ep, evs, 1024, 100);
        for (int k = 0; k < n; k++) {
            conn_t *c = evs[k].data.ptr;
            if ((evs[k].events & EPOLLOUT) && !c->sent) {
                char p[256]; snprintf(p, sizeof p, path, c->topic);
                int len = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n", p);
                send_all(c->fd, req, (size_t)len); c->sent = 1; requested++;
                struct epoll_event in = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &in);
            }
            if (evs[k].events & EPOLLIN) { int was = c->connected; on_readable(c); opened += c->connected && !was; }
            if (evs[k].events & (EPOLLERR | EPOLLHUP)) { fprintf(stderr, "subscriber connection failed\n"); return 1; }
        }
        if ((now_ns() - start) / 1e9 > timeout_s) { fprintf(stderr, "only %d of %d streams opened\n", opened, subs); return 1; }
    }
    double connect_s = (now_ns() - start) / 1e9;
    if (await_s > 0) return await_one_event(ep, opened, connect_s);
    if (hold_s > 0) { /* idle: keep the connections open for the runner to measure */
        printf("{\"opened\": %d, \"connect_s\": %.3f}\n", opened, connect_s); fflush(stdout);
        long long until = now_ns() + (long long)(hold_s * 1e9);
        while (now_ns() < until) {
            int n = epoll_wait(ep, evs, 1024, 200);
            for (int k = 0; k < n; k++) if (evs[k].events & EPOLLIN) on_readable(evs[k].data.ptr);
        }
        return 0;
    }
    /* Publishers run in a thread of their own (on the same core): they are answered, and send their
     * next request, while the main thread is in a long read round as well as between rounds, so the
     * generator's reading never holds publishing up. */
    publisher_t pub = {.conns = conns, .ep = epoll_create1(0)};
    for (int i = 0; i < pubconns; i++) {
        conn_t *c = &conns[subs + i];
        c->kind = PUB; c->fd = connect_to(i, port); c->index = i;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(pub.ep, EPOLL_CTL_ADD, c->fd, &ev);
    }
    struct timespec settle = {0, 200000000}; nanosleep(&settle, NULL); /* publisher connections up */
    long long expected_total = 0;
    for (int i = 0; i < subs; i++) expected_total += events / topics + (i % topics < events % topics);
    printf("{\"phase\": \"publish\"}\n"); fflush(stdout); /* the runner samples server CPU from here */
    double cpu0 = cpu_s();
    long long t0 = now_ns(), window_ns = 0, window_max_ns = (long long)(read_window_ms * 1e6);
    pub.t0 = t0;
    reads = 0;
    pthread_t pub_thread;
    if (pthread_create(&pub_thread, NULL, publisher_main, &pub) != 0) { perror("pthread_create"); return 1; }
    while (1) {
        long long t_published = __atomic_load_n(&pub.t_published, __ATOMIC_ACQUIRE);
        /* Read window (throughput scenarios only): before reading the subscribers again, wait as long as
         * the last read round took, up to window_max. Each read then drains several frames, and its
         * syscall and ACK are shared by them; a frame waits at most one window plus one round before it
         * is read, and is stamped (latency) when it is read. */
        if (window_ns > 0 && !t_published) {
            struct timespec t = {window_ns / 1000000000, window_ns % 1000000000};
            nanosleep(&t, NULL);
        }
        /* A read round: every ready connection, once. */
        int n = epoll_wait(ep, evs, 1024, rate ? 1 : 10);
        long long busy_from = now_ns();
        for (;;) {
            for (int k = 0; k < n; k++) on_readable(evs[k].data.ptr);
            if (n < 1024) break;
            n = epoll_wait(ep, evs, 1024, 0);
        }
        if (window_max_ns) {
            window_ns = now_ns() - busy_from;
            if (window_ns > window_max_ns) window_ns = window_max_ns;
        }
        if (t_published && delivered >= expected_total) break;
        if ((now_ns() - t0) / 1e9 > timeout_s) break;
    }
    __atomic_store_n(&pub.stop, 1, __ATOMIC_RELEASE);
    pthread_join(pub_thread, NULL);
    long long t_published = pub.t_published;
    long long t1 = now_ns();
    long long dup = 0, reordered = 0;
    for (int i = 0; i < subs; i++) { dup += conns[i].dup; reordered += conns[i].reordered; }
    double cpu = cpu_s() - cpu0; /* the run's work, not the sort below */
    qsort(lat, (size_t)nlat, 8, cmp_ll);
    double secs = (t1 - t0) / 1e9, pub_secs = (t_published ? t_published - t0 : t1 - t0) / 1e9;
    printf("{\"subscribers\": %d, \"events\": %lld, \"published\": %lld, \"expected\": %lld, "
           "\"delivered\": %lld, \"lost\": %lld, \"duplicated\": %lld, \"out_of_order\": %lld, "
           "\"seconds\": %.4f, \"publish_seconds\": %.4f, \"deliveries_per_s\": %.0f, "
           "\"publishes_per_s\": %.0f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
           "\"generator_cpu_s\": %.3f, \"connect_s\": %.3f, \"reads\": %lld}\n",
           subs, events, published, expected_total, delivered, expected_total - delivered, dup, reordered,
           secs, pub_secs, delivered / secs, published / pub_secs,
           nlat ? lat[nlat / 2] / 1e6 : 0, nlat ? lat[(long long)(nlat * 0.99)] / 1e6 : 0,
           nlat ? lat[nlat - 1] / 1e6 : 0, cpu, connect_s, reads);
    return 0;
}

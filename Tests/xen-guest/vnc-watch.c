/* SPDX-License-Identifier: MIT */
/*
 * vnc-watch: the display client of scripts/xen-guest-test. QEMU updates its
 * copy of the guest's framebuffer (and asks Xen for the dirty VRAM pages,
 * track_dirty_vram) only while a display client wants updates, so this
 * connects to QEMU's VNC server, asks for updates until SIGTERM, keeps the
 * frame, and writes it out: the harness compares it with what the guest drew.
 *
 *   vnc-watch HOST PORT OUT     watch; write the last frame (32 bpp) to OUT
 *   vnc-watch --pattern W H     write the test picture the guest draws
 *
 * Only RFB 3.8 with no authentication, raw encoding and DesktopSize.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int sig) { (void)sig; stop = 1; }

/* The picture the guest writes to /dev/fb0: x8r8g8b8, the pad byte zero so
 * any pixel conversion on QEMU's side keeps it. */
static uint32_t pattern_pixel(uint32_t x, uint32_t y)
{
    uint32_t r = (x * 7 + y) & 0xff, g = (y * 5 + (x >> 2)) & 0xff, b = (x ^ y) & 0xff;
    return r << 16 | g << 8 | b;
}

static int fd;
static int read_full(void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n > 0) {
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, 200);
        if (r < 0 && errno == EINTR)
            continue;
        if (r == 0) {
            if (stop)
                return -1;
            continue;
        }
        ssize_t got = read(fd, p, n);
        if (got <= 0)
            return -1;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}
static int write_full(const void *buf, size_t n)
{
    return write(fd, buf, n) == (ssize_t)n ? 0 : -1;
}
static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "--pattern") == 0) {
        uint32_t w = (uint32_t)atoi(argv[2]), h = (uint32_t)atoi(argv[3]);
        for (uint32_t y = 0; y < h; y++)
            for (uint32_t x = 0; x < w; x++) {
                uint32_t px = pattern_pixel(x, y);
                fwrite(&px, 4, 1, stdout);
            }
        return 0;
    }
    if (argc != 4) {
        fprintf(stderr, "usage: vnc-watch HOST PORT OUT | vnc-watch --pattern W H\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    if (inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
        fprintf(stderr, "vnc-watch: bad address %s\n", argv[1]);
        return 2;
    }
    /* QEMU may not listen yet: retry for a minute. */
    for (int i = 0;; i++) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
        close(fd);
        if (i >= 600 || stop) {
            fprintf(stderr, "vnc-watch: cannot connect to %s:%s\n", argv[1], argv[2]);
            return 1;
        }
        usleep(100000);
    }
    uint8_t b[64];
    if (read_full(b, 12) || write_full("RFB 003.008\n", 12) || read_full(b, 1))
        goto lost;
    uint8_t ntypes = b[0], types[256], none = 0;
    if (ntypes == 0 || read_full(types, ntypes))
        goto lost;
    for (int i = 0; i < ntypes; i++)
        none |= types[i] == 1;
    if (!none) {
        fprintf(stderr, "vnc-watch: the server wants authentication\n");
        return 1;
    }
    uint8_t one = 1;
    if (write_full(&one, 1) || read_full(b, 4) || be32(b) != 0 || write_full(&one, 1) || read_full(b, 24))
        goto lost;
    uint32_t w = be16(b), h = be16(b + 2), namelen = be32(b + 20);
    char name[256] = "";
    for (uint32_t left = namelen; left > 0;) {
        uint32_t n = left < sizeof name - 1 ? left : (uint32_t)sizeof name - 1;
        if (read_full(name, n))
            goto lost;
        name[n] = 0;
        left -= n;
    }
    /* 32 bpp, depth 24, little endian, true colour, x8r8g8b8 */
    uint8_t spf[20] = {0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0};
    uint8_t enc[12] = {2, 0, 0, 2, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x21}; /* raw, DesktopSize (-223) */
    if (write_full(spf, sizeof spf) || write_full(enc, sizeof enc))
        goto lost;
    uint32_t *frame = calloc((size_t)w * h, 4);
    unsigned long updates = 0, rects = 0, bytes = 0, resizes = 0;
    int incremental = 0;
    while (!stop) {
        uint8_t req[10] = {3, (uint8_t)incremental, 0, 0, 0, 0, (uint8_t)(w >> 8), (uint8_t)w, (uint8_t)(h >> 8), (uint8_t)h};
        if (write_full(req, sizeof req) || read_full(b, 1))
            break;
        incremental = 1;
        if (b[0] == 0) {
            if (read_full(b, 3))
                break;
            uint16_t n = be16(b + 1);
            updates++;
            for (uint16_t i = 0; i < n; i++) {
                if (read_full(b, 12))
                    goto out;
                uint32_t rx = be16(b), ry = be16(b + 2), rw = be16(b + 4), rh = be16(b + 6);
                int32_t e = (int32_t)be32(b + 8);
                if (e == -223) {
                    free(frame);
                    w = rw, h = rh;
                    frame = calloc((size_t)w * h, 4);
                    resizes++;
                    incremental = 0;
                    continue;
                }
                if (e != 0 || rx + rw > w || ry + rh > h) {
                    fprintf(stderr, "vnc-watch: unexpected rectangle (encoding %d)\n", e);
                    goto out;
                }
                for (uint32_t y = 0; y < rh; y++)
                    if (read_full(frame + (size_t)(ry + y) * w + rx, (size_t)rw * 4))
                        goto out;
                rects++;
                bytes += (unsigned long)rw * rh * 4;
            }
        } else if (b[0] == 1) { /* colour map: not used in true colour */
            if (read_full(b, 5))
                break;
            uint8_t skip[6];
            for (uint16_t i = 0; i < be16(b + 3); i++)
                if (read_full(skip, 6))
                    goto out;
        } else if (b[0] == 2) { /* bell */
        } else if (b[0] == 3) { /* cut text */
            if (read_full(b, 7))
                break;
            for (uint32_t left = be32(b + 3); left > 0; left--)
                if (read_full(b, 1))
                    goto out;
        } else {
            fprintf(stderr, "vnc-watch: unknown server message %u\n", b[0]);
            break;
        }
        usleep(50000);
    }
out:;
    FILE *f = fopen(argv[3], "w");
    if (!f || fwrite(frame, 4, (size_t)w * h, f) != (size_t)w * h || fclose(f)) {
        fprintf(stderr, "vnc-watch: cannot write %s\n", argv[3]);
        return 1;
    }
    printf("desktop=\"%s\" width=%u height=%u updates=%lu rects=%lu bytes=%lu resizes=%lu\n", name, w, h, updates, rects,
           bytes, resizes);
    return 0;
lost:
    fprintf(stderr, "vnc-watch: the server closed the connection during the handshake\n");
    return 1;
}

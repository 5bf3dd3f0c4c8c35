/* Helpers for virtio-bench.sh, built static so they run in any guest.
 *
 *   virtio-bench read PATH seq|rand BLOCK COUNT   timed reads (O_DIRECT when the file
 *                                                 allows it); prints "MBps=… iops=… direct=0|1
 *                                                 bytes=… sum=…": sum adds the first 8 bytes
 *                                                 of every 4 KiB read, so legs reading the
 *                                                 same file in the same order must agree
 *   virtio-bench sink                             counts stdin; prints "bytes=… MBps=…"
 *                                                 timed from the first byte to EOF
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <linux/fs.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int do_read(const char *path, int rand_mode, long bs, long count) {
    int direct = 1;
    int fd = open(path, O_RDONLY | O_DIRECT);
    if (fd < 0) { direct = 0; fd = open(path, O_RDONLY); }
    if (fd < 0) { perror(path); return 1; }
    struct stat st;
    uint64_t size = 0;
    if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode)) ioctl(fd, BLKGETSIZE64, &size);
    else size = st.st_size;
    uint64_t blocks = size / bs;
    if (blocks == 0) { fprintf(stderr, "%s is smaller than one block\n", path); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, bs)) return 1;
    uint64_t x = 88172645463325252ull;
    uint64_t sum = 0;
    double t0 = now();
    for (long i = 0; i < count; i++) {
        uint64_t b;
        if (rand_mode) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; b = x % blocks; }
        else b = i % blocks;
        if (pread(fd, buf, bs, (off_t)(b * bs)) != bs) { perror("pread"); return 1; }
        for (long o = 0; o + 8 <= bs; o += 4096) {
            uint64_t w;
            memcpy(&w, (char *)buf + o, 8);
            sum += w;
        }
    }
    double dt = now() - t0;
    printf("MBps=%.1f iops=%.0f direct=%d bytes=%lld sum=%016llx\n", count * (double)bs / dt / 1e6,
           count / dt, direct, (long long)count * bs, (unsigned long long)sum);
    return 0;
}

static int sink(void) {
    static char buf[1 << 16];
    uint64_t total = 0;
    double t0 = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n <= 0) break;
        if (total == 0) t0 = now();
        total += n;
    }
    double dt = now() - t0;
    printf("bytes=%llu MBps=%.1f\n", (unsigned long long)total, total ? total / dt / 1e6 : 0.0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "read"))
        return do_read(argv[2], !strcmp(argv[3], "rand"), atol(argv[4]), atol(argv[5]));
    if (argc == 2 && !strcmp(argv[1], "sink")) return sink();
    fprintf(stderr, "usage: virtio-bench read PATH seq|rand BLOCK COUNT | virtio-bench sink\n");
    return 2;
}

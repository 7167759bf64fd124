/*
 * Shared helper for the libFuzzer targets: the readers under test take a
 * path, so each input is written to an in-memory file (memfd) and passed as
 * /proc/self/fd/N.
 */
#ifndef EDGEFL_FUZZ_COMMON_H
#define EDGEFL_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data to a fresh memfd; fills path; returns the fd (close it after). */
static int fuzz_file(const uint8_t *data, size_t size, char *path, size_t n) {
    int fd = memfd_create("edgefl-fuzz", 0);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, n, "/proc/self/fd/%d", fd);
    return fd;
}

#endif /* EDGEFL_FUZZ_COMMON_H */

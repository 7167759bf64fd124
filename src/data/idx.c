/*
 * IDX reader: the file format of MNIST and Fashion-MNIST (a 4-byte magic,
 * big-endian u32 dimensions, then the raw big-endian elements), read
 * gzip-compressed or plain through zlib. Inputs come from disk and the
 * network, so nothing in the file is trusted: every size is checked against
 * what the file actually delivers before it is used.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/core_internal.h"
#include "edgefl/data.h"

#define IDX_DEFAULT_MAX ((size_t)2 << 30)
/* Deflate cannot expand data by more than about 1032:1, so a gzip file of
 * S bytes holding more than this many bytes is certainly lying about its size. */
#define DEFLATE_MAX_RATIO 1032u
/* Starting capacity when the file's claimed size is not believable yet. */
#define IDX_GROW_START ((size_t)1 << 20)
/* gzread takes an unsigned length and returns an int. */
#define GZ_CHUNK ((size_t)1 << 30)

static size_t idx_elem_size(int type) {
    switch (type) {
    case EF_IDX_U8:
    case EF_IDX_I8: return 1;
    case EF_IDX_I16: return 2;
    case EF_IDX_I32:
    case EF_IDX_F32: return 4;
    case EF_IDX_F64: return 8;
    }
    return 0;
}

static uint32_t load_be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* The file stores big-endian elements; swap in place on little-endian hosts. */
static void idx_to_host_order(void *data, size_t count, size_t elem_size) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    EF_UNUSED(data);
    EF_UNUSED(count);
    EF_UNUSED(elem_size);
#else
    unsigned char *p = data;
    if (elem_size == 2) {
        for (size_t i = 0; i < count; i++, p += 2) {
            uint16_t v;
            memcpy(&v, p, 2);
            v = __builtin_bswap16(v);
            memcpy(p, &v, 2);
        }
    } else if (elem_size == 4) {
        for (size_t i = 0; i < count; i++, p += 4) {
            uint32_t v;
            memcpy(&v, p, 4);
            v = __builtin_bswap32(v);
            memcpy(p, &v, 4);
        }
    } else if (elem_size == 8) {
        for (size_t i = 0; i < count; i++, p += 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            v = __builtin_bswap64(v);
            memcpy(p, &v, 8);
        }
    }
#endif
}

/*
 * Reads up to len bytes, looping over short reads; *got says how many came.
 * A short count with no zlib error is a clean end of input. Truncated or
 * corrupt gzip streams surface here as zlib errors, reported against path.
 */
static ef_status gz_read_full(gzFile gz, const char *path, void *buf, size_t len, size_t *got) {
    unsigned char *p = buf;
    *got = 0;
    while (*got < len) {
        size_t want = len - *got;
        if (want > GZ_CHUNK) want = GZ_CHUNK;
        int n = gzread(gz, p + *got, (unsigned)want);
        int zerr = Z_OK;
        const char *zmsg = gzerror(gz, &zerr);
        if (zerr == Z_ERRNO)
            return ef__fail(EF_ERR_IO, "%s: read error: %s", path, strerror(errno));
        if (zerr == Z_BUF_ERROR)
            return ef__fail(EF_ERR_FORMAT,
                            "%s: corrupt gzip stream: compressed data ends early "
                            "(unexpected end of file)",
                            path);
        if (zerr == Z_MEM_ERROR)
            return ef__fail(EF_ERR_NOMEM, "%s: out of memory in zlib", path);
        if (zerr != Z_OK || n < 0) {
            /* zlib prefixes its message with the name given to gzdopen
             * ("<fd:3>: "), which means nothing to the user; we name the path. */
            if (zmsg && strncmp(zmsg, "<fd:", 4) == 0 && strstr(zmsg, ": "))
                zmsg = strstr(zmsg, ": ") + 2;
            return ef__fail(EF_ERR_FORMAT, "%s: corrupt gzip stream: %s", path,
                            zmsg && *zmsg ? zmsg : "unknown zlib error");
        }
        if (n == 0) break;
        *got += (size_t)n;
    }
    return EF_OK;
}

/*
 * Moves the `used` bytes of *buf into a block of new_cap bytes. Done by hand
 * rather than with ef_realloc because the allocator hook may lack realloc.
 */
static ef_status grow_buffer(unsigned char **buf, size_t used, size_t new_cap) {
    unsigned char *nb = ef_malloc(new_cap);
    if (!nb) return EF_ERR_NOMEM;
    if (used) memcpy(nb, *buf, used);
    ef_free(*buf);
    *buf = nb;
    return EF_OK;
}

ef_status ef_idx_read(const char *path, size_t max_bytes, ef_idx *out) {
    return ef_idx_read_prefix(path, 0, max_bytes, out);
}

ef_status ef_idx_read_prefix(const char *path, uint32_t max_items, size_t max_bytes,
                             ef_idx *out) {
    ef_status st = EF_OK;
    int fd = -1;
    gzFile gz = NULL;
    unsigned char *data = NULL;
    ef_idx r;
    memset(&r, 0, sizeof r);
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return ef__fail(EF_ERR_INVALID, "ef_idx_read: NULL argument");
    if (max_bytes == 0) max_bytes = IDX_DEFAULT_MAX;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (S_ISDIR(sb.st_mode)) {
        st = ef__fail(EF_ERR_IO, "%s: is a directory", path);
        goto fail;
    }
    int regular = S_ISREG(sb.st_mode);
    size_t file_size = regular ? (size_t)sb.st_size : 0;

    /* Peek at the gzip magic and ISIZE trailer (uncompressed size mod 2^32)
     * before zlib takes the descriptor, to size the buffer in one go when the
     * trailer is believable. Whether zlib decompresses at all is asked from
     * gzdirect() later; this is only a sizing hint. */
    int is_gzip = 0;
    uint32_t isize = 0;
    if (regular && file_size >= 18) {
        unsigned char m[4];
        if (pread(fd, m, 2, 0) == 2 && m[0] == 0x1f && m[1] == 0x8b) {
            is_gzip = 1;
            if (pread(fd, m, 4, (off_t)(file_size - 4)) == 4)
                isize = (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 |
                        (uint32_t)m[3] << 24;
        }
    }

    gz = gzdopen(fd, "rb");
    if (!gz) {
        st = ef__fail(EF_ERR_NOMEM, "%s: cannot start zlib reader", path);
        goto fail;
    }
    fd = -1; /* gzclose closes it now */
    gzbuffer(gz, 256 * 1024);

    unsigned char hdr[4 * 8];
    size_t got;
    if ((st = gz_read_full(gz, path, hdr, 4, &got)) != EF_OK) goto fail;
    if (got == 0) {
        st = ef__fail(EF_ERR_FORMAT, "%s: empty file", path);
        goto fail;
    }
    if (got < 4) {
        st = ef__fail(EF_ERR_FORMAT, "%s: truncated: file ends inside the 4-byte magic", path);
        goto fail;
    }
    if (hdr[0] != 0 || hdr[1] != 0) {
        st = ef__fail(EF_ERR_FORMAT,
                      "%s: bad magic %02x %02x %02x %02x (an IDX file starts with two zero "
                      "bytes)",
                      path, hdr[0], hdr[1], hdr[2], hdr[3]);
        goto fail;
    }
    r.elem_size = idx_elem_size(hdr[2]);
    if (r.elem_size == 0) {
        st = ef__fail(EF_ERR_FORMAT, "%s: unknown element type 0x%02x in magic", path, hdr[2]);
        goto fail;
    }
    r.type = (ef_idx_type)hdr[2];
    r.ndim = hdr[3];
    if (r.ndim < 1 || r.ndim > 8) {
        st = ef__fail(EF_ERR_FORMAT, "%s: %d dimensions in magic (must be 1..8)", path, r.ndim);
        goto fail;
    }
    size_t dims_bytes = 4 * (size_t)r.ndim;
    if ((st = gz_read_full(gz, path, hdr, dims_bytes, &got)) != EF_OK) goto fail;
    if (got < dims_bytes) {
        st = ef__fail(EF_ERR_FORMAT, "%s: truncated: expected %zu bytes of dimensions, got %zu",
                      path, dims_bytes, got);
        goto fail;
    }
    r.count = 1;
    for (int d = 0; d < r.ndim; d++) {
        r.dims[d] = load_be32(hdr + 4 * d);
        if (r.dims[d] == 0) {
            st = ef__fail(EF_ERR_FORMAT, "%s: dimension %d is zero", path, d);
            goto fail;
        }
        if (!ef__mul_size(r.count, r.dims[d], &r.count)) {
            st = ef__fail(EF_ERR_RANGE, "%s: product of dimensions overflows", path);
            goto fail;
        }
    }
    size_t full_nbytes; /* what the header claims */
    if (!ef__mul_size(r.count, r.elem_size, &full_nbytes)) {
        st = ef__fail(EF_ERR_RANGE, "%s: product of dimensions overflows", path);
        goto fail;
    }
    r.file_dim0 = r.dims[0];
    if (max_items > 0 && max_items < r.dims[0]) {
        /* only the first max_items along dimension 0 are read */
        r.count = r.count / r.dims[0] * max_items;
        r.dims[0] = max_items;
    }
    size_t nbytes;
    if (!ef__mul_size(r.count, r.elem_size, &nbytes) || nbytes > max_bytes) {
        st = ef__fail(EF_ERR_RANGE, "%s: %zu elements of %zu bytes exceed the %zu-byte limit",
                      path, r.count, r.elem_size, max_bytes);
        goto fail;
    }

    /* Capacity: allocate the claimed size at once only when the file can
     * plausibly hold it; otherwise grow as data actually arrives, so a tiny
     * crafted file cannot make us allocate gigabytes. */
    size_t hdr_total = 4 + dims_bytes;
    size_t cap;
    if (regular && gzdirect(gz)) {
        size_t avail = file_size >= hdr_total ? file_size - hdr_total : 0;
        if (avail < full_nbytes) {
            st = ef__fail(EF_ERR_FORMAT, "%s: truncated: expected %zu bytes of data, got %zu",
                          path, full_nbytes, avail);
            goto fail;
        }
        cap = nbytes;
    } else if (is_gzip && (uint32_t)(full_nbytes + hdr_total) == isize &&
               nbytes / DEFLATE_MAX_RATIO <= file_size) {
        cap = nbytes;
    } else {
        cap = nbytes < IDX_GROW_START ? nbytes : IDX_GROW_START;
    }
    data = ef_malloc(cap);
    if (!data) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    size_t have = 0;
    for (;;) {
        if ((st = gz_read_full(gz, path, data + have, cap - have, &got)) != EF_OK) goto fail;
        have += got;
        if (have < cap) {
            st = ef__fail(EF_ERR_FORMAT, "%s: truncated: expected %zu bytes of data, got %zu",
                          path, nbytes, have);
            goto fail;
        }
        if (have == nbytes) break;
        size_t ncap = cap > nbytes / 2 ? nbytes : cap * 2;
        if ((st = grow_buffer(&data, have, ncap)) != EF_OK) goto fail;
        cap = ncap;
    }
    /* One more byte tells trailing garbage from a clean end, and makes zlib
     * reach the end of the stream and verify its CRC. A prefix read stops
     * early and checks neither. */
    unsigned char extra;
    got = 0;
    if (nbytes == full_nbytes && (st = gz_read_full(gz, path, &extra, 1, &got)) != EF_OK)
        goto fail;
    if (got != 0) {
        st = ef__fail(EF_ERR_FORMAT, "%s: trailing bytes after the %zu bytes of data", path,
                      nbytes);
        goto fail;
    }
    int zerr = gzclose(gz);
    gz = NULL;
    if (zerr != Z_OK) {
        st = ef__fail(EF_ERR_FORMAT, "%s: corrupt gzip stream (zlib error %d at close)", path,
                      zerr);
        goto fail;
    }
    idx_to_host_order(data, r.count, r.elem_size);
    r.data = data;
    *out = r;
    return EF_OK;

fail:
    if (gz) gzclose(gz);
    if (fd >= 0) close(fd);
    ef_free(data);
    return st;
}

void ef_idx_free(ef_idx *idx) {
    if (!idx) return;
    ef_free(idx->data);
    memset(idx, 0, sizeof *idx);
}

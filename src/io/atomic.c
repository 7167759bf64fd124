/*
 * Atomic file replacement and whole-file reads. A checkpoint written while
 * the process or the machine dies must leave either the previous file or the
 * complete new one, so writes go to a temporary file in the target's own
 * directory (rename is only atomic within one file system), which is fsynced,
 * renamed over the target, and then the directory is fsynced so the rename
 * itself is durable.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_internal.h"
#include "edgefl/io.h"

#define READ_DEFAULT_MAX ((size_t)2 << 30)
/* Attempts at a fresh temporary name before giving up on EEXIST. */
#define TMP_ATTEMPTS 100

struct ef_atomic_file {
    int fd;
    int failed; /* a write failed: the temp file is incomplete, never commit it */
    char *path;
    char *tmp;
};

static unsigned next_tmp_counter(void) {
    static unsigned counter;
    return __atomic_fetch_add(&counter, 1u, __ATOMIC_RELAXED);
}

ef_status ef_atomic_open(ef_atomic_file **out, const char *path) {
    return ef_atomic_open_mode(out, path, 0644);
}

ef_status ef_atomic_open_mode(ef_atomic_file **out, const char *path, unsigned mode) {
    ef_status st;
    ef_atomic_file *f = NULL;
    if (out) *out = NULL;
    if (!out || !path || !*path)
        return ef__fail(EF_ERR_INVALID, "ef_atomic_open: NULL or empty path");
    f = ef_calloc(1, sizeof *f);
    if (!f) return EF_ERR_NOMEM;
    f->fd = -1;
    f->path = ef_strdup(path);
    size_t tmp_len = strlen(path) + 64;
    f->tmp = ef_malloc(tmp_len);
    if (!f->path || !f->tmp) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    for (int attempt = 0; attempt < TMP_ATTEMPTS; attempt++) {
        snprintf(f->tmp, tmp_len, "%s.tmp.%ld.%u", path, (long)getpid(), next_tmp_counter());
        f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
        if (f->fd >= 0 || errno != EEXIST) break;
    }
    if (f->fd < 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot create temporary file %s: %s", path, f->tmp,
                      strerror(errno));
        goto fail;
    }
    *out = f;
    return EF_OK;

fail:
    ef_free(f->path);
    ef_free(f->tmp);
    ef_free(f);
    return st;
}

ef_status ef_atomic_write(ef_atomic_file *f, const void *data, size_t len) {
    if (!f) return ef__fail(EF_ERR_INVALID, "ef_atomic_write: NULL file");
    if (f->failed) return ef__fail(EF_ERR_STATE, "%s: an earlier write failed", f->path);
    const unsigned char *p = data;
    while (len > 0) {
        ssize_t n = write(f->fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            /* write() returning 0 for a non-empty request means no progress
             * is possible; treat it like ENOSPC rather than spin. */
            int e = n < 0 ? errno : ENOSPC;
            f->failed = 1;
            return ef__fail(EF_ERR_IO, "%s: write to %s failed: %s", f->path, f->tmp,
                            strerror(e));
        }
        p += n;
        len -= (size_t)n;
    }
    return EF_OK;
}

/* Frees the handle; the descriptor must already be closed or be -1. */
static void atomic_release(ef_atomic_file *f) {
    ef_free(f->path);
    ef_free(f->tmp);
    ef_free(f);
}

/*
 * fsyncs the directory holding `path` so the rename survives a crash. Some
 * file systems cannot fsync directories (EINVAL); nothing more can be done
 * there, so that is not an error.
 */
static ef_status fsync_parent_dir(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        strcpy(dir, ".");
    } else if (slash == path) {
        strcpy(dir, "/");
    } else {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof dir) return ef__fail(EF_ERR_IO, "%s: directory name too long", path);
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return ef__fail(EF_ERR_IO, "%s: cannot open directory %s to fsync it: %s", path, dir,
                        strerror(errno));
    int rc = fsync(dfd);
    int e = errno;
    close(dfd);
    if (rc != 0 && e != EINVAL)
        return ef__fail(EF_ERR_IO, "%s: fsync of directory %s failed: %s", path, dir,
                        strerror(e));
    return EF_OK;
}

ef_status ef_atomic_commit(ef_atomic_file *f) {
    ef_status st;
    if (!f) return ef__fail(EF_ERR_INVALID, "ef_atomic_commit: NULL file");
    if (f->failed) {
        st = ef__fail(EF_ERR_STATE, "%s: not committed because an earlier write failed",
                      f->path);
        goto fail;
    }
    if (fsync(f->fd) != 0) {
        st = ef__fail(EF_ERR_IO, "%s: fsync of %s failed: %s", f->path, f->tmp, strerror(errno));
        goto fail;
    }
    /* close() can report deferred write errors (NFS); its result matters. */
    int rc = close(f->fd);
    f->fd = -1;
    if (rc != 0) {
        st = ef__fail(EF_ERR_IO, "%s: close of %s failed: %s", f->path, f->tmp, strerror(errno));
        goto fail;
    }
    if (rename(f->tmp, f->path) != 0) {
        st = ef__fail(EF_ERR_IO, "%s: cannot rename %s over it: %s", f->path, f->tmp,
                      strerror(errno));
        goto fail;
    }
    /* From here the new content is in place; a failure below only means the
     * rename may not yet be durable, and there is no temp file to remove. */
    st = fsync_parent_dir(f->path);
    atomic_release(f);
    return st;

fail:
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    atomic_release(f);
    return st;
}

void ef_atomic_abort(ef_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    unlink(f->tmp);
    atomic_release(f);
}

ef_status ef_write_file_atomic(const char *path, const void *data, size_t len) {
    return ef_write_file_atomic_mode(path, data, len, 0644);
}

ef_status ef_write_file_atomic_mode(const char *path, const void *data, size_t len, unsigned mode) {
    ef_atomic_file *f;
    ef_status st = ef_atomic_open_mode(&f, path, mode);
    if (st != EF_OK) return st;
    if ((st = ef_atomic_write(f, data, len)) != EF_OK) {
        ef_atomic_abort(f);
        return st;
    }
    return ef_atomic_commit(f);
}

ef_status ef_read_file(const char *path, size_t max_bytes, char **out, size_t *len) {
    ef_status st;
    char *buf = NULL;
    int fd = -1;
    if (out) *out = NULL;
    if (len) *len = 0;
    if (!path || !out || !len) return ef__fail(EF_ERR_INVALID, "ef_read_file: NULL argument");
    if (max_bytes == 0) max_bytes = READ_DEFAULT_MAX;
    if (max_bytes == SIZE_MAX) max_bytes--; /* room for the terminating NUL */

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
    /* The stat size is a hint only (pipes report 0, files can grow while we
     * read), so the loop below grows the buffer and enforces the bound. */
    size_t cap = S_ISREG(sb.st_mode) ? (size_t)sb.st_size : 0;
    if (cap > max_bytes) {
        st = ef__fail(EF_ERR_RANGE, "%s: %zu bytes exceed the %zu-byte limit", path, cap,
                      max_bytes);
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) cap = max_bytes < 4096 ? max_bytes : 4096;
    buf = ef_malloc(cap + 1);
    if (!buf) {
        st = EF_ERR_NOMEM;
        goto fail;
    }
    size_t have = 0;
    for (;;) {
        char probe;
        ssize_t n;
        if (have < cap) {
            n = read(fd, buf + have, cap - have);
        } else {
            /* Full: one probe byte tells end of file from a file that grew
             * (or a pipe), without growing the buffer just to see EOF. */
            n = read(fd, &probe, 1);
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            st = ef__fail(EF_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            goto fail;
        }
        if (n == 0) break;
        if (have < cap) {
            have += (size_t)n;
            continue;
        }
        if (have >= max_bytes) {
            st = ef__fail(EF_ERR_RANGE, "%s: larger than the %zu-byte limit", path, max_bytes);
            goto fail;
        }
        size_t ncap = cap < 2048 ? 4096 : cap > max_bytes / 2 ? max_bytes : cap * 2;
        if (ncap > max_bytes) ncap = max_bytes;
        char *nb = ef_malloc(ncap + 1);
        if (!nb) {
            st = EF_ERR_NOMEM;
            goto fail;
        }
        memcpy(nb, buf, have);
        ef_free(buf);
        buf = nb;
        cap = ncap;
        buf[have++] = probe;
    }
    close(fd);
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return EF_OK;

fail:
    if (fd >= 0) close(fd);
    ef_free(buf);
    return st;
}

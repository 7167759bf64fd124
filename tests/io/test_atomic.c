/*
 * Tests of atomic file replacement and ef_read_file: a commit replaces the
 * whole content, an abort or a failed commit leaves the old file and no
 * temporary files behind, unwritable targets fail with the path in the
 * message, and reads respect their size bound.
 */
#include <dirent.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "edgefl/io.h"
#include "test_util.h"

static char g_dir[256];

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

/* Number of entries in g_dir whose name contains `part` (NULL: all). */
static int count_entries(const char *part) {
    DIR *d = opendir(g_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (!part || strstr(e->d_name, part)) n++;
    }
    if (d) closedir(d);
    return n;
}

/* True when the file holds exactly `want`. */
static int file_is(const char *path, const char *want) {
    char *data = NULL;
    size_t len = 0;
    if (ef_read_file(path, 0, &data, &len) != EF_OK) return 0;
    int same = len == strlen(want) && memcmp(data, want, len) == 0;
    ef_free(data);
    return same;
}

static void test_commit_and_abort(void) {
    const char *p = tpath("state.json");
    CHECK_OK(ef_write_file_atomic(p, "old", 3));
    CHECK(file_is(p, "old"));
    struct stat sb;
    CHECK(stat(p, &sb) == 0 && (sb.st_mode & 0777) == 0644);

    /* Several writes, committed: the content is replaced as a whole. */
    ef_atomic_file *f = NULL;
    CHECK_OK(ef_atomic_open(&f, p));
    CHECK(f != NULL);
    CHECK(count_entries(".tmp.") == 1);
    CHECK_OK(ef_atomic_write(f, "new ", 4));
    CHECK_OK(ef_atomic_write(f, "", 0));
    CHECK_OK(ef_atomic_write(f, "content", 7));
    CHECK(file_is(p, "old")); /* nothing visible before commit */
    CHECK_OK(ef_atomic_commit(f));
    CHECK(file_is(p, "new content"));
    CHECK(count_entries(".tmp.") == 0);

    /* Abort: old content stays, temp file goes. */
    CHECK_OK(ef_atomic_open(&f, p));
    CHECK_OK(ef_atomic_write(f, "half-writ", 9));
    CHECK(count_entries(".tmp.") == 1);
    ef_atomic_abort(f);
    CHECK(file_is(p, "new content"));
    CHECK(count_entries(".tmp.") == 0);
    CHECK(count_entries(NULL) == 1);
    ef_atomic_abort(NULL);

    /* Two writers at once get distinct temp files; the last commit wins. */
    ef_atomic_file *a = NULL, *b = NULL;
    CHECK_OK(ef_atomic_open(&a, p));
    CHECK_OK(ef_atomic_open(&b, p));
    CHECK(count_entries(".tmp.") == 2);
    CHECK_OK(ef_atomic_write(a, "A", 1));
    CHECK_OK(ef_atomic_write(b, "B", 1));
    CHECK_OK(ef_atomic_commit(a));
    CHECK_OK(ef_atomic_commit(b));
    CHECK(file_is(p, "B"));
    CHECK(count_entries(".tmp.") == 0);

    /* A new file (no previous version) and a larger one. */
    size_t big_len = 3u << 20;
    char *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)(i * 31 + 7);
    CHECK_OK(ef_write_file_atomic(tpath("big.bin"), big, big_len));
    char *back = NULL;
    size_t back_len = 0;
    CHECK_OK(ef_read_file(tpath("big.bin"), 0, &back, &back_len));
    CHECK(back_len == big_len && back && memcmp(back, big, big_len) == 0 && back[big_len] == 0);
    ef_free(back);
    free(big);
    CHECK(unlink(tpath("big.bin")) == 0);

    /* A relative path (no directory part) works in the current directory. */
    char cwd[512];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK(chdir(g_dir) == 0);
    CHECK_OK(ef_write_file_atomic("relative.txt", "rel", 3));
    CHECK(file_is("relative.txt", "rel"));
    CHECK(unlink("relative.txt") == 0);
    CHECK(chdir(cwd) == 0);
}

static void test_failures(void) {
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-dir/sub/model.safetensors", g_dir);
    ef_atomic_file *f = (ef_atomic_file *)1;
    ef_status st = ef_atomic_open(&f, missing);
    CHECK(st == EF_ERR_IO);
    CHECK(f == NULL);
    CHECK_MSG(strstr(ef_last_error(), missing) != NULL, "%s", ef_last_error());
    CHECK_MSG(strstr(ef_last_error(), "No such file") != NULL, "%s", ef_last_error());
    st = ef_write_file_atomic(missing, "x", 1);
    CHECK(st == EF_ERR_IO);
    CHECK_MSG(strstr(ef_last_error(), missing) != NULL, "%s", ef_last_error());
    CHECK(ef_atomic_open(&f, "") == EF_ERR_INVALID);

    /* Renaming over a directory fails at commit: the directory survives, the
     * temp file is removed. */
    const char *d = tpath("a-directory");
    CHECK(mkdir(d, 0755) == 0);
    CHECK_OK(ef_atomic_open(&f, d));
    CHECK_OK(ef_atomic_write(f, "data", 4));
    st = ef_atomic_commit(f);
    CHECK(st == EF_ERR_IO);
    CHECK_MSG(strstr(ef_last_error(), d) != NULL, "%s", ef_last_error());
    struct stat sb;
    CHECK(stat(d, &sb) == 0 && S_ISDIR(sb.st_mode));
    CHECK(count_entries(".tmp.") == 0);
    CHECK(rmdir(d) == 0);

    /* A read-only directory refuses the temp file (root ignores modes). */
    if (geteuid() != 0) {
        const char *ro = tpath("readonly");
        CHECK(mkdir(ro, 0555) == 0);
        char target[600];
        snprintf(target, sizeof target, "%s/file", ro);
        CHECK(ef_write_file_atomic(target, "x", 1) == EF_ERR_IO);
        CHECK_MSG(strstr(ef_last_error(), target) != NULL, "%s", ef_last_error());
        CHECK(rmdir(ro) == 0);
    }
}

static void test_read_file(void) {
    const char *p = tpath("hundred");
    char data[100];
    for (int i = 0; i < 100; i++) data[i] = (char)('a' + i % 26);
    CHECK_OK(ef_write_file_atomic(p, data, 100));
    char *out = NULL;
    size_t len = 0;
    CHECK_OK(ef_read_file(p, 100, &out, &len));
    CHECK(len == 100 && out && memcmp(out, data, 100) == 0 && out[100] == '\0');
    ef_free(out);
    CHECK_OK(ef_read_file(p, 101, &out, &len));
    CHECK(len == 100);
    ef_free(out);
    out = (char *)1;
    len = 7;
    CHECK(ef_read_file(p, 99, &out, &len) == EF_ERR_RANGE);
    CHECK(out == NULL && len == 0);
    CHECK_MSG(strstr(ef_last_error(), p) != NULL, "%s", ef_last_error());

    CHECK_OK(ef_write_file_atomic(tpath("empty"), "", 0));
    CHECK_OK(ef_read_file(tpath("empty"), 0, &out, &len));
    CHECK(len == 0 && out && out[0] == '\0');
    ef_free(out);
    CHECK_OK(ef_read_file(tpath("empty"), 1, &out, &len));
    CHECK(len == 0);
    ef_free(out);

    CHECK(ef_read_file(tpath("absent"), 0, &out, &len) == EF_ERR_IO);
    CHECK(out == NULL);
    CHECK_MSG(strstr(ef_last_error(), "absent") && strstr(ef_last_error(), "No such file"), "%s",
              ef_last_error());
    CHECK(ef_read_file(g_dir, 0, &out, &len) == EF_ERR_IO);
    CHECK(out == NULL);

    /* Files whose size stat cannot tell (procfs reports 0) are read to EOF,
     * and still bounded. */
    CHECK_OK(ef_read_file("/proc/self/status", 0, &out, &len));
    CHECK(len > 0 && out && strstr(out, "Name:") == out);
    ef_free(out);
    CHECK(ef_read_file("/proc/self/status", 10, &out, &len) == EF_ERR_RANGE);
}

static long g_budget;
static void *oom_malloc(void *u, size_t n) {
    (void)u;
    return g_budget-- > 0 ? malloc(n) : NULL;
}
static void *oom_realloc(void *u, void *p, size_t n) {
    (void)u;
    return g_budget-- > 0 ? realloc(p, n) : NULL;
}
static void oom_free(void *u, void *p) {
    (void)u;
    free(p);
}

static void test_oom(void) {
    ef_allocator a = {oom_malloc, oom_realloc, oom_free, NULL};
    const char *p = tpath("oom");
    int ok = 0;
    for (long budget = 0; budget < 10 && !ok; budget++) {
        g_budget = budget;
        ef_set_allocator(&a);
        ef_status st = ef_write_file_atomic(p, "oom-test", 8);
        ef_set_allocator(NULL);
        if (st == EF_OK) ok = 1;
        else CHECK_MSG(st == EF_ERR_NOMEM, "budget %ld: %s", budget, ef_last_error());
        CHECK(count_entries(".tmp.") == 0);
    }
    CHECK(ok && file_is(p, "oom-test"));
}

int main(void) {
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(g_dir, sizeof g_dir, "%s/edgefl-atomic-XXXXXX", tmp);
    if (!mkdtemp(g_dir)) {
        perror("mkdtemp");
        return 1;
    }
    umask(022);
    test_commit_and_abort();
    test_failures();
    test_read_file();
    test_oom();
    tu_rmtree(g_dir);
    return tu_finish("io/test_atomic");
}

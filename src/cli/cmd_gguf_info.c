/*
 * `edgefl gguf-info FILE`: prints a GGUF file's header, metadata and tensor
 * table (or one JSON object with --json). The file is fully validated by
 * the reader first, so this is also the way to check a file by hand.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "edgefl/gguf.h"

static const char *USAGE = "edgefl gguf-info FILE [--max-items N] [--json]";
static const char *DESC =
    "Validates a GGUF file (ggml's model format, as read by llama.cpp) and prints its\n"
    "version, alignment, metadata (arrays shortened to their first N items) and tensor\n"
    "table: name, ggml type, shape (innermost dimension first, as ggml lists it), bytes\n"
    "and offset in the data section. A malformed file is refused with the reason and\n"
    "the byte offset at fault (exit code 1).";

/* Strict UTF-8 without NUL (so the bytes can go into JSON as a string). */
static int utf8_ok(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        uint32_t cp, min;
        if (c == 0) return 0;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

/* Prints a string quoted, escaping control bytes, at most `max` bytes of it. */
static void print_quoted(const char *s, size_t len, size_t max) {
    putchar('"');
    for (size_t i = 0; i < len && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
        else putchar(c);
    }
    putchar('"');
    if (len > max) printf("...(%zu bytes)", len);
}

/* Prints element i of entry k as text. */
static void print_elem(const ef_gguf *g, size_t k, uint64_t i, ef_gguf_type t) {
    int64_t iv;
    uint64_t uv;
    double dv;
    bool bv;
    const char *s;
    size_t len;
    switch (t) {
    case EF_GGUF_UINT8: case EF_GGUF_UINT16: case EF_GGUF_UINT32: case EF_GGUF_UINT64:
        if (ef_gguf_kv_uint(g, k, i, &uv) == EF_OK) printf("%" PRIu64, uv);
        break;
    case EF_GGUF_INT8: case EF_GGUF_INT16: case EF_GGUF_INT32: case EF_GGUF_INT64:
        if (ef_gguf_kv_int(g, k, i, &iv) == EF_OK) printf("%" PRId64, iv);
        break;
    case EF_GGUF_FLOAT32: case EF_GGUF_FLOAT64:
        if (ef_gguf_kv_float(g, k, i, &dv) == EF_OK) printf("%.9g", dv);
        break;
    case EF_GGUF_BOOL:
        if (ef_gguf_kv_bool(g, k, i, &bv) == EF_OK) fputs(bv ? "true" : "false", stdout);
        break;
    case EF_GGUF_STRING:
        if (ef_gguf_kv_str(g, k, i, &s, &len) == EF_OK) print_quoted(s, len, 80);
        break;
    default:
        break;
    }
}

/* Element i of entry k as JSON. */
static cJSON *json_elem(const ef_gguf *g, size_t k, uint64_t i, ef_gguf_type t) {
    int64_t iv;
    uint64_t uv;
    double dv;
    bool bv;
    const char *s;
    size_t len;
    char buf[32];
    switch (t) {
    case EF_GGUF_UINT8: case EF_GGUF_UINT16: case EF_GGUF_UINT32: case EF_GGUF_UINT64:
        if (ef_gguf_kv_uint(g, k, i, &uv) != EF_OK) return cJSON_CreateNull();
        if (uv <= (1ull << 53)) return cJSON_CreateNumber((double)uv);
        snprintf(buf, sizeof buf, "%" PRIu64, uv); /* beyond a double's integers: exact text */
        return cJSON_CreateString(buf);
    case EF_GGUF_INT8: case EF_GGUF_INT16: case EF_GGUF_INT32: case EF_GGUF_INT64:
        if (ef_gguf_kv_int(g, k, i, &iv) != EF_OK) return cJSON_CreateNull();
        if (iv <= (1ll << 53) && iv >= -(1ll << 53)) return cJSON_CreateNumber((double)iv);
        snprintf(buf, sizeof buf, "%" PRId64, iv);
        return cJSON_CreateString(buf);
    case EF_GGUF_FLOAT32: case EF_GGUF_FLOAT64:
        if (ef_gguf_kv_float(g, k, i, &dv) != EF_OK) return cJSON_CreateNull();
        if (dv != dv || dv - dv != 0) { /* NaN or inf: not JSON numbers */
            snprintf(buf, sizeof buf, "%g", dv);
            return cJSON_CreateString(buf);
        }
        return cJSON_CreateNumber(dv);
    case EF_GGUF_BOOL:
        if (ef_gguf_kv_bool(g, k, i, &bv) != EF_OK) return cJSON_CreateNull();
        return cJSON_CreateBool(bv);
    case EF_GGUF_STRING: {
        if (ef_gguf_kv_str(g, k, i, &s, &len) != EF_OK) return cJSON_CreateNull();
        if (utf8_ok((const unsigned char *)s, len)) return cJSON_CreateString(s);
        /* not text: the bytes as hex */
        cJSON *o = cJSON_CreateObject();
        char *hex = malloc(2 * len + 1);
        if (!o || !hex) {
            free(hex);
            return o;
        }
        for (size_t b = 0; b < len; b++) snprintf(hex + 2 * b, 3, "%02x", (unsigned char)s[b]);
        hex[2 * len] = '\0';
        cJSON_AddStringToObject(o, "hex", hex);
        free(hex);
        return o;
    }
    default:
        return cJSON_CreateNull();
    }
}

static void shape_text(const ef_gguf_tensor *t, char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = '\0';
    for (int d = 0; d < t->n_dims && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%" PRId64, d ? " x " : "", t->ne[d]);
}

int cmd_gguf_info(int argc, char **argv) {
    int json = 0, max_items = 8;
    cli_opt opts[] = {
        {"max-items", CLI_INT, &max_items, "N", "array items to show per key (default 8; 0: none)", 0, 1 << 30, NULL, 0},
        {"json", CLI_FLAG, &json, NULL, "print one JSON object on stdout", 0, 0, NULL, 0},
        {0},
    };
    const char *pos[1];
    int n_pos = 0;
    argc = cli_take_positionals(argc, argv, 2, opts, pos, 1, &n_pos);
    int help;
    int rc = cli_parse("gguf-info", argc, argv, 2, opts, &help, USAGE, DESC);
    if (rc || help) return rc;
    if (n_pos != 1) {
        if (n_pos == 0) cli_error("gguf-info", "FILE is required");
        else cli_error("gguf-info", "one FILE expected, got %d arguments", n_pos);
        fprintf(stderr, "Usage: %s\n", USAGE);
        return CLI_EXIT_USAGE;
    }
    const char *path = pos[0];
    ef_gguf *g = NULL;
    if (ef_gguf_open(&g, path) != EF_OK) {
        cli_error("gguf-info", "%s", ef_last_error());
        return CLI_EXIT_FAIL;
    }
    size_t nkv = ef_gguf_kv_count(g), nt = ef_gguf_tensor_count(g);
    uint64_t params = 0, tbytes = 0;
    for (size_t i = 0; i < nt; i++) {
        params += (uint64_t)ef_gguf_tensor_at(g, i)->n_elements;
        tbytes += ef_gguf_tensor_at(g, i)->nbytes;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "file", path);
        cJSON_AddNumberToObject(j, "version", ef_gguf_version(g));
        cJSON_AddNumberToObject(j, "alignment", (double)ef_gguf_alignment(g));
        cJSON_AddNumberToObject(j, "data_offset", (double)ef_gguf_data_offset(g));
        cJSON_AddNumberToObject(j, "file_size", (double)ef_gguf_file_size(g));
        cJSON_AddNumberToObject(j, "n_parameters", (double)params);
        cJSON_AddNumberToObject(j, "tensor_bytes", (double)tbytes);
        cJSON *meta = cJSON_AddObjectToObject(j, "metadata");
        for (size_t k = 0; k < nkv; k++) {
            const ef_gguf_kv *kv = ef_gguf_kv_at(g, k);
            if (kv->type != EF_GGUF_ARRAY) {
                cJSON_AddItemToObject(meta, kv->key, json_elem(g, k, 0, kv->elem_type));
                continue;
            }
            cJSON *a = cJSON_CreateObject();
            cJSON_AddStringToObject(a, "type", "array");
            cJSON_AddStringToObject(a, "elem", ef_gguf_type_name(kv->elem_type));
            cJSON_AddNumberToObject(a, "n", (double)kv->n);
            cJSON *vals = cJSON_AddArrayToObject(a, "values");
            for (uint64_t i = 0; i < kv->n && i < (uint64_t)max_items; i++)
                cJSON_AddItemToArray(vals, json_elem(g, k, i, kv->elem_type));
            cJSON_AddItemToObject(meta, kv->key, a);
        }
        cJSON *ts = cJSON_AddArrayToObject(j, "tensors");
        for (size_t i = 0; i < nt; i++) {
            const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddStringToObject(o, "type", ef_ggml_type_name(t->type));
            cJSON *ne = cJSON_AddArrayToObject(o, "ne");
            for (int d = 0; d < t->n_dims; d++)
                cJSON_AddItemToArray(ne, cJSON_CreateNumber((double)t->ne[d]));
            cJSON_AddNumberToObject(o, "n_elements", (double)t->n_elements);
            cJSON_AddNumberToObject(o, "nbytes", (double)t->nbytes);
            cJSON_AddNumberToObject(o, "offset", (double)t->offset);
            cJSON_AddItemToArray(ts, o);
        }
        ef_gguf_close(g);
        return cli_print_json("gguf-info", j) ? CLI_EXIT_FAIL : 0;
    }

    printf("file: %s\n", path);
    printf("GGUF version %" PRIu32 ", alignment %zu, data section at byte %" PRIu64 ", %" PRIu64
           " bytes (%.2f MiB)\n",
           ef_gguf_version(g), ef_gguf_alignment(g), ef_gguf_data_offset(g),
           ef_gguf_file_size(g), (double)ef_gguf_file_size(g) / 1048576.0);
    printf("\nmetadata: %zu keys\n", nkv);
    for (size_t k = 0; k < nkv; k++) {
        const ef_gguf_kv *kv = ef_gguf_kv_at(g, k);
        printf("  %-44s ", kv->key);
        if (kv->type != EF_GGUF_ARRAY) {
            printf("%-8s ", ef_gguf_type_name(kv->elem_type));
            print_elem(g, k, 0, kv->elem_type);
        } else {
            char tn[48];
            snprintf(tn, sizeof tn, "[%s; %" PRIu64 "]", ef_gguf_type_name(kv->elem_type), kv->n);
            printf("%-8s ", tn);
            if (max_items > 0) {
                putchar('[');
                for (uint64_t i = 0; i < kv->n && i < (uint64_t)max_items; i++) {
                    if (i) fputs(", ", stdout);
                    print_elem(g, k, i, kv->elem_type);
                }
                if (kv->n > (uint64_t)max_items) fputs(", ...", stdout);
                putchar(']');
            }
        }
        putchar('\n');
    }
    printf("\ntensors: %zu, %" PRIu64 " parameters, %" PRIu64 " bytes (%.2f MiB)\n", nt, params,
           tbytes, (double)tbytes / 1048576.0);
    if (nt) printf("  %5s  %-36s %-6s %-22s %12s %12s\n", "#", "name", "type", "shape", "bytes",
                   "offset");
    for (size_t i = 0; i < nt; i++) {
        const ef_gguf_tensor *t = ef_gguf_tensor_at(g, i);
        char shape[96];
        shape_text(t, shape, sizeof shape);
        printf("  %5zu  %-36s %-6s %-22s %12zu %12" PRIu64 "\n", i, t->name,
               ef_ggml_type_name(t->type), shape, t->nbytes, t->offset);
    }
    ef_gguf_close(g);
    return 0;
}

/*
 * Regression corpus of the wire format: every file in tests/fl/wire_corpus/
 * (written by tests/fl/make_wire_corpus.py, an encoder independent of ours)
 * is decoded and must behave as its name says:
 *
 *   valid-<type>[-...].bin          envelope and typed payload decode; the type
 *                                   is <type>; the job id is the script's; and
 *                                   ef_wire_seal re-creates the file byte for byte
 *   bad-env-*.bin                   refused by ef_wire_decode
 *   bad-payload-<type>-*.bin        envelope of type <type> decodes, its payload
 *                                   decoder refuses it
 *
 * Refusals must be EF_ERR_FORMAT with a message. The test fails if the folder
 * is missing, empty, lacks a valid file of some type, or holds a file whose
 * name follows none of these patterns.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/wire.h"
#include "test_util.h"

#define CORPUS EF_SOURCE_DIR "/tests/fl/wire_corpus"
#define MAX_PAYLOAD 4096                 /* MAX_PAYLOAD in make_wire_corpus.py */
#define CORPUS_JOB 0x0123456789ABCDEFull /* JOB in make_wire_corpus.py */

/* Reads a whole file into an exact-size block (ASan sees any over-read). */
static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = n >= 0 ? malloc(n > 0 ? (size_t)n : 1) : NULL;
    if (b && n > 0 && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* The message type named at the start of s ("eval_result-..." -> 6), or 0. */
static int type_of_name(const char *s) {
    size_t k = strcspn(s, "-.");
    for (int t = EF_MSG_CHECKIN; t <= EF_MSG_LAST; t++) {
        const char *name = ef_msg_type_name((ef_msg_type)t);
        if (strlen(name) == k && strncmp(s, name, k) == 0) return t;
    }
    return 0;
}

/* Runs the payload decoder of m's type; checks what a success implies. */
static ef_status decode_payload(const ef_msg *m, const char *file) {
    ef_status st = EF_ERR_INTERNAL;
    switch (m->type) {
    case EF_MSG_CHECKIN: {
        ef_checkin c;
        st = ef_decode_checkin(m, &c);
        break;
    }
    case EF_MSG_MODEL: {
        ef_model_msg mm;
        if ((st = ef_decode_model(m, &mm)) == EF_OK)
            CHECK_MSG(mm.raw == m->payload + EF_MODEL_FIXED &&
                          mm.n * 4 + EF_MODEL_FIXED == m->payload_len,
                      "%s: model of %llu floats in %zu bytes", file, (unsigned long long)mm.n,
                      m->payload_len);
        break;
    }
    case EF_MSG_TASK: {
        ef_task t;
        if ((st = ef_decode_task(m, &t)) == EF_OK)
            CHECK_MSG(t.epochs > 0 && t.batch > 0 && t.lr > 0 && t.momentum < 1,
                      "%s: task settings", file);
        break;
    }
    case EF_MSG_UPDATE: {
        ef_update u;
        if ((st = ef_decode_update(m, &u)) == EF_OK)
            CHECK_MSG(u.raw == m->payload + EF_UPDATE_FIXED &&
                          u.n * 4 + EF_UPDATE_FIXED == m->payload_len && u.n_examples > 0,
                      "%s: update of %llu floats in %zu bytes", file, (unsigned long long)u.n,
                      m->payload_len);
        break;
    }
    case EF_MSG_EVAL: {
        ef_eval_task e;
        st = ef_decode_eval(m, &e);
        break;
    }
    case EF_MSG_EVAL_RESULT: {
        ef_eval_result r;
        if ((st = ef_decode_eval_result(m, &r)) == EF_OK)
            CHECK_MSG(r.correct <= r.n_examples && r.loss_sum >= 0, "%s: eval result", file);
        break;
    }
    case EF_MSG_LEAVE: {
        uint32_t reason;
        st = ef_decode_leave(m, &reason);
        break;
    }
    case EF_MSG_SA_SETUP: {
        ef_task t;
        ef_sa_setup sa;
        if ((st = ef_decode_sa_setup(m, &t, &sa)) == EF_OK)
            CHECK_MSG(sa.index < sa.n && sa.bits >= 1 && sa.bits <= 32 && sa.clip > 0,
                      "%s: secure aggregation settings", file);
        break;
    }
    case EF_MSG_SA_MASKED: {
        ef_sa_masked sm;
        if ((st = ef_decode_sa_masked(m, &sm)) == EF_OK)
            CHECK_MSG(sm.raw == m->payload + EF_SA_MASKED_FIXED &&
                          sm.n * 4 + EF_SA_MASKED_FIXED == m->payload_len,
                      "%s: masked update of %llu words in %zu bytes", file,
                      (unsigned long long)sm.n, m->payload_len);
        break;
    }
    case EF_MSG_PARTIAL: {
        ef_partial pa;
        if ((st = ef_decode_partial(m, &pa)) == EF_OK)
            CHECK_MSG(pa.raw == m->payload + EF_PARTIAL_FIXED + pa.count * EF_PARTIAL_ENTRY &&
                          pa.raw + pa.n * 4 == m->payload + m->payload_len,
                      "%s: partial of %u entries, %llu floats in %zu bytes", file, pa.count,
                      (unsigned long long)pa.n, m->payload_len);
        break;
    }
    default: /* the other SecAgg+ payloads are checked by the SecAgg+ machines */
        st = EF_OK;
        break;
    }
    return st;
}

/* A refusal: EF_ERR_FORMAT with a message. */
static void check_refusal(ef_status st, const char *file, const char *stage) {
    const char *e = ef_last_error();
    CHECK_MSG(st == EF_ERR_FORMAT && e[0] != '\0', "%s: %s returned %s with message \"%s\"", file,
              stage, ef_strerror(st), e);
}

/* Every entry but hidden ones ("." and ".." included). */
static int not_hidden(const struct dirent *d) { return d->d_name[0] != '.'; }

int main(void) {
    struct dirent **names = NULL;
    int n = scandir(CORPUS, &names, not_hidden, alphasort);
    CHECK_MSG(n > 0, "%s: %s", CORPUS, n < 0 ? "cannot read the folder" : "no files");
    if (n <= 0) return tu_finish("test_wire_corpus");

    int valid_of_type[EF_MSG_LAST + 1] = {0};
    int n_valid = 0, n_bad_env = 0, n_bad_payload = 0, n_bad_other = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        size_t nl = strlen(name);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", CORPUS, name);
        int is_valid = strncmp(name, "valid-", 6) == 0;
        int is_bad = strncmp(name, "bad-", 4) == 0;
        if (nl < 4 || strcmp(name + nl - 4, ".bin") != 0 || (!is_valid && !is_bad)) {
            CHECK_MSG(0, "%s: not a valid-*.bin or bad-*.bin corpus file", name);
            free(names[i]);
            continue;
        }
        size_t len = 0;
        uint8_t *buf = slurp(path, &len);
        CHECK_MSG(buf != NULL, "%s: cannot read", path);
        if (!buf) {
            free(names[i]);
            continue;
        }

        ef_msg m;
        ef_clear_error();
        ef_status st = ef_wire_decode(buf, len, MAX_PAYLOAD, &m);
        if (is_valid) {
            n_valid++;
            int want = type_of_name(name + 6);
            CHECK_MSG(want != 0, "%s: the name does not say which message type", name);
            CHECK_MSG(st == EF_OK, "%s: envelope refused: %s", name, ef_last_error());
            if (st == EF_OK) {
                CHECK_MSG((int)m.type == want, "%s: decoded as %s", name,
                          ef_msg_type_name(m.type));
                CHECK_MSG(m.job == CORPUS_JOB, "%s: job %llx", name, (unsigned long long)m.job);
                CHECK(m.payload == buf + EF_WIRE_HEADER && m.payload_len == len - EF_WIRE_HEADER);
                ef_clear_error();
                st = decode_payload(&m, name);
                CHECK_MSG(st == EF_OK, "%s: payload refused: %s", name, ef_last_error());
                if (st == EF_OK && (int)m.type == want) valid_of_type[want]++;
                /* our encoder writes exactly what the independent one did */
                uint8_t *again = malloc(len);
                if (!again) abort();
                memcpy(again + EF_WIRE_HEADER, m.payload, m.payload_len);
                ef_wire_seal_task(again, m.type, m.job, m.round, m.sender, m.seq, m.task, m.payload_len);
                CHECK_MSG(memcmp(again, buf, len) == 0, "%s: ef_wire_seal_task writes other bytes",
                          name);
                free(again);
            }
        } else if (strncmp(name, "bad-env-", 8) == 0) {
            n_bad_env++;
            check_refusal(st, name, "ef_wire_decode");
        } else if (strncmp(name, "bad-payload-", 12) == 0) {
            n_bad_payload++;
            int want = type_of_name(name + 12);
            CHECK_MSG(want != 0, "%s: the name does not say which message type", name);
            CHECK_MSG(st == EF_OK, "%s: the envelope should pass, got: %s", name,
                      ef_last_error());
            if (st == EF_OK) {
                CHECK_MSG((int)m.type == want, "%s: decoded as %s", name,
                          ef_msg_type_name(m.type));
                ef_clear_error();
                check_refusal(decode_payload(&m, name), name, "the payload decoder");
            }
        } else {
            /* any other bad-*: refused at either stage */
            n_bad_other++;
            if (st == EF_OK) {
                ef_clear_error();
                st = decode_payload(&m, name);
                check_refusal(st, name, "the payload decoder");
            } else {
                check_refusal(st, name, "ef_wire_decode");
            }
        }
        free(buf);
        free(names[i]);
    }
    free(names);

    for (int t = EF_MSG_CHECKIN; t <= EF_MSG_LAST; t++)
        if (t <= EF_MSG_LEAVE || t == EF_MSG_SA_SETUP || t == EF_MSG_SA_MASKED || t == EF_MSG_PARTIAL)
            CHECK_MSG(valid_of_type[t] > 0, "no valid %s message in the corpus",
                      ef_msg_type_name((ef_msg_type)t));
    CHECK_MSG(n_bad_env > 0 && n_bad_payload > 0, "the corpus lacks bad-env-* or bad-payload-*");
    printf("%s: %d valid, %d bad-env, %d bad-payload, %d other bad files\n", CORPUS, n_valid,
           n_bad_env, n_bad_payload, n_bad_other);
    return tu_finish("test_wire_corpus");
}

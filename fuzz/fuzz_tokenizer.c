/*
 * libFuzzer target for the tokenizer: the input is either a tokenizer file
 * (read through ef_tokenizer_load, which must accept it consistently or
 * refuse it with a status) or, when it starts with byte 0x01, text for a
 * small trained tokenizer (encode, decode, pre-tokenize). Invariants checked:
 * an accepted file serializes, parses back and serializes to the same bytes;
 * decode(encode(x)) == x for any bytes, with and without special tokens;
 * pre-tokens always advance and cover the text. Never a crash, hang or leak.
 * `fuzz_tokenizer --make-seed DIR` writes DIR/tok.json, a valid seed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/tokenizer.h"
#include "fuzz_common.h"

static ef_tokenizer *g_tok;

static const char SEED_TEXT[] =
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep.<|endoftext|>I'm sure you'll see: "
    "it's 1,234 caf\xc3\xa9s \xe2\x80\x94 na\xc3\xafve! \xd0\x9f\xd1\x80\xd0\xb8 \xe4\xb8\xad\xe6\x96\x87\n\n  "
    "and the Spirit of God moved upon the face of the waters.";

static void round_trip(const ef_tokenizer *t, const uint8_t *data, size_t size, unsigned flags) {
    int32_t *ids = NULL;
    size_t n = 0;
    if (ef_tokenizer_encode(t, data, size, flags, &ids, &n) != EF_OK) abort();
    char *back = NULL;
    size_t bl = 0;
    if (ef_tokenizer_decode(t, ids, n, &back, &bl) != EF_OK) abort();
    if (bl != size || (size && memcmp(back, data, size) != 0)) abort();
    ef_free(back);
    ef_free(ids);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv) {
    if (ef_bpe_train(SEED_TEXT, sizeof SEED_TEXT - 1, 256 + 60 + 1, NULL, &g_tok) != EF_OK) abort();
    for (int i = 1; i + 1 < *argc; i++)
        if (strcmp((*argv)[i], "--make-seed") == 0) {
            char path[4096];
            snprintf(path, sizeof path, "%s/tok.json", (*argv)[i + 1]);
            if (ef_tokenizer_save(g_tok, path) != EF_OK) {
                fprintf(stderr, "%s\n", ef_last_error());
                exit(1);
            }
            exit(0);
        }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size && data[0] == 0x01) {
        data++;
        size--;
        round_trip(g_tok, data, size, 0);
        round_trip(g_tok, data, size, EF_TOK_ALLOW_SPECIAL);
        for (size_t pos = 0; pos < size;) {
            size_t end = ef_pretoken_end(data, size, pos);
            if (end <= pos || end > size) abort();
            pos = end;
        }
        return 0;
    }
    char path[64];
    int fd = fuzz_file(data, size, path, sizeof path);
    if (fd < 0) return 0;
    ef_tokenizer *t = NULL;
    if (ef_tokenizer_load(path, &t) == EF_OK) {
        if (ef_tokenizer_n_tokens(t) < 256) abort();
        char *s1 = NULL, *s2 = NULL;
        size_t l1, l2;
        ef_tokenizer *u = NULL;
        if (ef_tokenizer_serialize(t, &s1, &l1) != EF_OK || ef_tokenizer_parse(s1, l1, &u) != EF_OK ||
            ef_tokenizer_serialize(u, &s2, &l2) != EF_OK || l1 != l2 || memcmp(s1, s2, l1) != 0)
            abort();
        round_trip(t, data, size < 4096 ? size : 4096, EF_TOK_ALLOW_SPECIAL);
        ef_free(s1);
        ef_free(s2);
        ef_tokenizer_free(u);
        ef_tokenizer_free(t);
    } else if (t != NULL) {
        abort();
    }
    close(fd);
    return 0;
}

/*
 * Tests of the held-out corpus split (include/edgefl/corpus.h): the hash
 * against known answers computed with an independent Python implementation,
 * nested held-out sets, line handling ("\r\n", a last line without newline,
 * empty lines, labels kept or dropped), refusal of unlabelled lines with
 * their line number, and split by text (duplicates on one side, blank lines
 * in training). The real KJV is split in tests/cli/test_tokenizer_kjv.sh.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgefl/corpus.h"
#include "test_util.h"

static void test_hash(void) {
    /* python3: FNV-1a 64 then the splitmix64 finalizer */
    CHECK(ef_corpus_hash("", 0) == 0xf52a15e9a9b5e89bull);
    CHECK(ef_corpus_hash("Ge1:1", 5) == 0x17e7571d9ff04743ull);
    CHECK(ef_corpus_hash("Rev22:21", 8) == 0x3b1d89c71147c66dull);
    CHECK(ef_corpus_hash("Ge3:6", 5) == 0x357017eb0c87e25ull);
    /* Ge3:6 maps to 0.01305: held out at 1.5 %, not at 1 % */
    CHECK(ef_corpus_heldout("Ge3:6", 5, 0.015) && !ef_corpus_heldout("Ge3:6", 5, 0.01));
    CHECK(!ef_corpus_heldout("Ge1:1", 5, 0.05) && ef_corpus_heldout("Ge1:1", 5, 0.1));
    /* a larger fraction holds out a superset, and about the right share */
    char key[32];
    int n1 = 0, n5 = 0, nested = 1;
    for (int i = 0; i < 100000; i++) {
        int k = snprintf(key, sizeof key, "Book%d:%d", i / 50, i % 50);
        int a = ef_corpus_heldout(key, (size_t)k, 0.01), b = ef_corpus_heldout(key, (size_t)k, 0.05);
        n1 += a;
        n5 += b;
        if (a && !b) nested = 0;
    }
    CHECK(nested);
    CHECK_MSG(n1 > 900 && n1 < 1100 && n5 > 4700 && n5 < 5300, "1%%: %d, 5%%: %d of 100000", n1, n5);
    CHECK(ef_corpus_heldout("x", 1, 0.0) == 0 && ef_corpus_heldout("x", 1, 1.0) == 1);
}

static void test_split_labels(void) {
    /* Ge3:6 is held out at 0.015, the others are not (see above and below) */
    const char *text = "Ge1:1 In the beginning.\r\nGe3:6 And when the woman saw.\n\nRev22:21 Amen.";
    CHECK(!ef_corpus_heldout("Rev22:21", 8, 0.015));
    char *tr, *va;
    size_t tl, vl;
    ef_corpus_stats st;
    CHECK_OK(ef_corpus_split(text, strlen(text), EF_CORPUS_BY_LABEL, 0.015, 0, &tr, &tl, &va, &vl, &st));
    if (tr && va) {
        CHECK(!strcmp(tr, "Ge1:1 In the beginning.\nRev22:21 Amen.\n") && tl == strlen(tr));
        CHECK(!strcmp(va, "Ge3:6 And when the woman saw.\n") && vl == strlen(va));
        CHECK(st.train_lines == 2 && st.valid_lines == 1 && st.skipped_empty == 1);
        CHECK(st.train_bytes == tl && st.valid_bytes == vl);
    }
    ef_free(tr);
    ef_free(va);
    CHECK_OK(ef_corpus_split(text, strlen(text), EF_CORPUS_BY_LABEL, 0.015, 1, &tr, &tl, &va, &vl, &st));
    if (tr && va) {
        CHECK(!strcmp(tr, "In the beginning.\nAmen.\n"));
        CHECK(!strcmp(va, "And when the woman saw.\n"));
    }
    ef_free(tr);
    ef_free(va);
    /* fraction 0: all training, and an empty but valid validation text */
    CHECK_OK(ef_corpus_split(text, strlen(text), EF_CORPUS_BY_LABEL, 0.0, 0, &tr, &tl, &va, &vl, &st));
    CHECK(va && vl == 0 && va[0] == '\0' && st.train_lines == 3);
    ef_free(tr);
    ef_free(va);
    /* a line without a label is refused with its number; nothing is returned */
    const char *bad = "Ge1:1 ok\nGe1:2 ok\nno-label-here\n";
    tr = va = (char *)&tl;
    CHECK(ef_corpus_split(bad, strlen(bad), EF_CORPUS_BY_LABEL, 0.015, 0, &tr, &tl, &va, &vl, &st) ==
          EF_ERR_FORMAT);
    CHECK(tr == NULL && va == NULL && strstr(ef_last_error(), "line 3") != NULL);
    const char *bad2 = "Ge1:1 ok\n leading space\n";
    CHECK(ef_corpus_split(bad2, strlen(bad2), EF_CORPUS_BY_LABEL, 0.015, 0, &tr, &tl, &va, &vl, &st) ==
          EF_ERR_FORMAT);
    CHECK(ef_corpus_split(text, strlen(text), EF_CORPUS_BY_LABEL, 1.5, 0, &tr, &tl, &va, &vl, &st) ==
          EF_ERR_INVALID);
    CHECK(ef_corpus_split(text, strlen(text), EF_CORPUS_BY_TEXT, 0.1, 1, &tr, &tl, &va, &vl, &st) ==
          EF_ERR_INVALID);
    CHECK(ef_corpus_split(NULL, 3, EF_CORPUS_BY_TEXT, 0.1, 0, &tr, &tl, &va, &vl, &st) == EF_ERR_INVALID);
}

static void test_split_text(void) {
    /* 2000 lines of 200 distinct texts (each 10 times) and blank lines */
    size_t cap = 200000, k = 0;
    char *text = malloc(cap);
    for (int i = 0; i < 2000; i++) {
        k += (size_t)snprintf(text + k, cap - k, "line number %d of the text\n", i % 200);
        if (i % 7 == 0) k += (size_t)snprintf(text + k, cap - k, "  \n");
    }
    char *tr, *va;
    size_t tl, vl;
    ef_corpus_stats st;
    CHECK_OK(ef_corpus_split(text, k, EF_CORPUS_BY_TEXT, 0.2, 0, &tr, &tl, &va, &vl, &st));
    if (tr && va) {
        CHECK(tl + vl == k && st.train_lines + st.valid_lines == 2000 + 286);
        CHECK(st.valid_lines % 10 == 0 && st.valid_lines >= 200 && st.valid_lines <= 600);
        CHECK(strstr(va, "  \n") == NULL); /* blank lines stay in training */
        /* every held-out text appears 10 times in valid and never in train */
        char line[64];
        for (int i = 0; i < 200; i++) {
            snprintf(line, sizeof line, "line number %d of the text\n", i);
            int in_v = strstr(va, line) != NULL, in_t = strstr(tr, line) != NULL;
            CHECK(in_v != in_t);
        }
    }
    ef_free(tr);
    ef_free(va);
    free(text);
    /* empty input */
    CHECK_OK(ef_corpus_split("", 0, EF_CORPUS_BY_TEXT, 0.5, 0, &tr, &tl, &va, &vl, NULL));
    CHECK(tr && va && tl == 0 && vl == 0);
    ef_free(tr);
    ef_free(va);
}

int main(void) {
    test_hash();
    test_split_labels();
    test_split_text();
    return tu_finish("test_corpus");
}

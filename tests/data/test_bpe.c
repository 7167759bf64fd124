/*
 * Tests of the byte-level BPE tokenizer (include/edgefl/tokenizer.h):
 * - GPT-2's byte-to-unicode table and the pre-tokenizer on hand-made cases,
 *   then on random strings against Python's re with GPT-2's regex
 *   (tests/data/bpe_ref.py);
 * - merges computed by hand on a tiny corpus (counts, the tie rule, the
 *   min-frequency stop, a pair banned because its bytes are a special token);
 * - the incremental trainer against the naive Python trainer (every pair
 *   recounted at every step) on a generated corpus;
 * - encode against a naive GPT-2 bpe() written here, on random input;
 * - exact round trips for random bytes (NULs, invalid UTF-8, controls,
 *   special-token text), with and without special tokens;
 * - determinism, save/load and GGUF-array round trips, malformed files, bad
 *   arguments, out-of-memory at every allocation, and concurrent encoding.
 * Exits 77 only when python3 is missing and everything else passed.
 */
#include <pthread.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/bpe_internal.h"
#include "edgefl/io.h"
#include "edgefl/tokenizer.h"
#include "test_util.h"

#define PY "/usr/bin/python3"
#define REF EF_SOURCE_DIR "/tests/data/bpe_ref.py"

static char g_dir[256];
static int g_no_python;

static uint64_t g_rng = 0x243f6a8885a308d3ull;
static uint32_t rnd(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint32_t)(g_rng >> 16);
}

static const char *tpath(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", g_dir, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || (len && fwrite(data, 1, len, f) != len)) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static ef_tokenizer *train(const char *corpus, size_t len, size_t vocab, uint64_t min_freq,
                           const char *const *specials, size_t n_specials,
                           ef_bpe_train_stats *stats) {
    ef_bpe_train_opts o;
    ef_bpe_train_opts_init(&o);
    o.min_frequency = min_freq;
    o.specials = specials;
    o.n_specials = n_specials;
    o.stats = stats;
    ef_tokenizer *t = NULL;
    CHECK_OK(ef_bpe_train(corpus, len, vocab, &o, &t));
    return t;
}

/* No special tokens (a non-NULL array with n_specials 0). */
static const char *const NOSP[] = {NULL};

static char *serialize(const ef_tokenizer *t, size_t *len) {
    char *s = NULL;
    CHECK_OK(ef_tokenizer_serialize(t, &s, len));
    return s;
}

/* ---- byte-level text ------------------------------------------------------------ */

static void test_byte_level(void) {
    CHECK(bpe_tables_ok());
    ef_tokenizer *t = train("", 0, 257, 2, NULL, 0, NULL);
    if (!t) return;
    CHECK(ef_tokenizer_n_tokens(t) == 257 && ef_tokenizer_n_merges(t) == 0);
    CHECK(ef_tokenizer_eot_id(t) == 256 && ef_tokenizer_token_type(t, 256) == EF_TOK_CONTROL);
    CHECK(!strcmp(ef_tokenizer_token_text(t, 256), EF_TOK_EOT));
    /* GPT-2's table: printable bytes stand for themselves, the others for
     * U+0100 + n in byte order */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 'a'), "a"));
    CHECK(!strcmp(ef_tokenizer_token_text(t, '!'), "!"));
    CHECK(!strcmp(ef_tokenizer_token_text(t, ' '), "\xc4\xa0"));   /* U+0120 Ġ */
    CHECK(!strcmp(ef_tokenizer_token_text(t, '\n'), "\xc4\x8a"));  /* U+010A Ċ */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 0), "\xc4\x80"));     /* U+0100 Ā */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 0x7f), "\xc4\xa1"));  /* U+0121 ġ */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 0xa0), "\xc5\x82"));  /* U+0142 ł */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 0xad), "\xc5\x83"));  /* U+0143 Ń */
    CHECK(!strcmp(ef_tokenizer_token_text(t, 0xe9), "\xc3\xa9"));  /* é */
    for (int b = 0; b < 256; b++) {
        size_t n;
        const uint8_t *p = ef_tokenizer_token_bytes(t, b, &n);
        CHECK(p && n == 1 && p[0] == b && ef_tokenizer_token_type(t, b) == EF_TOK_NORMAL);
        CHECK(bpe_cp_byte(bpe_byte_cp((uint8_t)b)) == b);
    }
    int mapped = 0;
    for (uint32_t cp = 0; cp < 400; cp++) mapped += bpe_cp_byte(cp) >= 0;
    CHECK(mapped == 256);
    CHECK(ef_tokenizer_token_text(t, 257) == NULL && ef_tokenizer_token_text(t, -1) == NULL);
    CHECK(ef_tokenizer_token_bytes(t, 257, NULL) == NULL && ef_tokenizer_token_type(t, 999) == 0);
    ef_tokenizer_free(t);
}

/* ---- pre-tokenizer ----------------------------------------------------------------- */

/* Pre-tokens of s joined with '|'. */
static void split(const char *s, size_t n, char *out) {
    size_t k = 0;
    for (size_t pos = 0; pos < n;) {
        size_t end = ef_pretoken_end(s, n, pos);
        if (end <= pos || end > n) {
            strcpy(out, "<bad end>");
            return;
        }
        if (pos) out[k++] = '|';
        memcpy(out + k, s + pos, end - pos);
        k += end - pos;
        pos = end;
    }
    out[k] = '\0';
}

static void expect_split(const char *s, const char *want) {
    char got[1024];
    split(s, strlen(s), got);
    CHECK_MSG(!strcmp(got, want), "split(\"%s\") = \"%s\", want \"%s\"", s, got, want);
}

static void test_pretok_cases(void) {
    expect_split("Hello world", "Hello| world");
    expect_split("I'm sure you'll see it's John's", "I|'m| sure| you|'ll| see| it|'s| John|'s");
    expect_split("don't WE'RE they've he'd", "don|'t| WE|'|RE| they|'ve| he|'d");
    expect_split("  hi", " | hi");
    expect_split("a  \n\nb", "a|  \n|\n|b");
    expect_split("x 123 4.5!!", "x| 123| 4|.|5|!!");
    expect_split("end.  ", "end|.|  ");
    expect_split("'sup ''s", "'s|up| ''|s");
    expect_split("Ge1:1 In the beginning", "Ge|1|:|1| In| the| beginning");
    expect_split("\tword", "\t|word");
    expect_split(" \t x", " \t| x");
    expect_split("café naïve Straße", "café| naïve| Straße");
    expect_split("Привет мир", "Привет| мир");
    expect_split("a\xe2\x80\x94" "b", "a|\xe2\x80\x94|b");         /* em dash: other */
    expect_split("x\xc2\xa0y", "x|\xc2\xa0|y");                    /* no-break space */
    expect_split("\xd9\xa3\xd9\xa4 \xc2\xbd", "\xd9\xa3\xd9\xa4| \xc2\xbd"); /* Arabic digits, ½ */
    expect_split("e\xcc\x81t\xc3\xa9", "e|\xcc\x81|t\xc3\xa9");   /* combining acute: other */
    expect_split("\xff\xfe" "ab\x80", "\xff\xfe|ab|\x80");         /* invalid UTF-8 */
    expect_split("\xe2\x82", "\xe2\x82");                            /* truncated sequence */
    expect_split(" ", " ");
    expect_split("\n", "\n");
    char out[64];
    split("a\0b \0", 5, out);
    CHECK(!memcmp(out, "a|\0|b| \0", 8));
}

/* Random strings over characters where GPT-2's \p{L}/\p{N}/\s and Python's
 * re classes agree, split here and by bpe_ref.py. */
static void test_pretok_python(void) {
    static const char *pieces[] = {"a", "b", "Z", "e", "\xc3\xa9", "\xc3\x9f", "0", "7", " ",
                                   " ", "  ", "\n", "\t", "\r", "'", "'s", "'t", "'re", "'ll",
                                   "'ve", "'m", "'d", ".", ",", "!", "_", "-", "\"", "(", ":"};
    enum { N = 400 };
    static char strs[N][96];
    FILE *f = fopen(tpath("pretok.in"), "w");
    if (!f) return;
    for (int i = 0; i < N; i++) {
        size_t k = 0;
        int len = 1 + (int)(rnd() % 20);
        for (int j = 0; j < len; j++) {
            const char *p = pieces[rnd() % (sizeof pieces / sizeof *pieces)];
            memcpy(strs[i] + k, p, strlen(p));
            k += strlen(p);
        }
        strs[i][k] = '\0';
        for (size_t j = 0; j < k; j++) fprintf(f, "%02x", (unsigned char)strs[i][j]);
        fprintf(f, "\n");
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s pretok < %s > %s", PY, REF, tpath("pretok.in"),
             tpath("pretok.out"));
    if (system(cmd) != 0) {
        CHECK_MSG(0, "bpe_ref.py pretok failed");
        return;
    }
    f = fopen(tpath("pretok.out"), "r");
    if (!f) return;
    char line[4096];
    int bad = 0;
    for (int i = 0; i < N && fgets(line, sizeof line, f); i++) {
        /* expected: hex pieces separated by spaces -> "|"-joined text */
        char want[512];
        size_t k = 0;
        for (char *p = line; *p && *p != '\n';) {
            if (*p == ' ') {
                want[k++] = '|';
                p++;
                continue;
            }
            unsigned v;
            sscanf(p, "%2x", &v);
            want[k++] = (char)v;
            p += 2;
        }
        want[k] = '\0';
        char got[512];
        split(strs[i], strlen(strs[i]), got);
        if (strcmp(got, want) != 0 && bad++ < 5)
            CHECK_MSG(0, "string %d: C \"%s\" vs Python \"%s\"", i, got, want);
    }
    fclose(f);
    CHECK_MSG(bad == 0, "%d of %d strings split differently", bad, N);
}

/* Random strings from many scripts and categories (letters, combining
 * marks, digits of other scripts, number forms, punctuation, symbols,
 * Unicode spaces, emoji, ideographs), split here and by GPT-2's own regex
 * engine (the `regex` module). Only blocks assigned long ago, so the Unicode
 * versions of the two sides agree. Returns 0 when `regex` is missing. */
static int test_pretok_unicode(void) {
    static const uint32_t blocks[][2] = {
        {0x41, 0x5A},       {0x61, 0x7A},       {0x30, 0x39},       {0x21, 0x2F},
        {0xA0, 0xFF},       {0x100, 0x17F},     {0x300, 0x36F},     {0x391, 0x3A9},
        {0x3B1, 0x3C9},     {0x400, 0x4FF},     {0x621, 0x63A},     {0x64B, 0x652},
        {0x660, 0x669},     {0x905, 0x939},     {0x93E, 0x94C},     {0x966, 0x96F},
        {0x2000, 0x200A},   {0x2010, 0x2027},   {0x2030, 0x205E},   {0x2070, 0x2079},
        {0x2150, 0x2182},   {0x2190, 0x21FF},   {0x2460, 0x24FF},   {0x3000, 0x303F},
        {0x4E00, 0x4FFF},   {0xAC00, 0xAFFF},   {0xFF01, 0xFF5E},   {0x1F600, 0x1F64F},
        {0x20, 0x20},       {0x0A, 0x0A},       {0x27, 0x27},       {0x2028, 0x2029},
    };
    enum { N = 500 };
    static char strs[N][256];
    FILE *f = fopen(tpath("uni.in"), "w");
    if (!f) return 1;
    for (int i = 0; i < N; i++) {
        size_t k = 0;
        int len = 1 + (int)(rnd() % 24);
        for (int j = 0; j < len; j++) {
            const uint32_t *b = blocks[rnd() % (sizeof blocks / sizeof *blocks)];
            uint32_t cp = b[0] + rnd() % (b[1] - b[0] + 1);
            char *o = strs[i] + k;
            if (cp < 0x80) o[0] = (char)cp, k += 1;
            else if (cp < 0x800) o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), k += 2;
            else if (cp < 0x10000)
                o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)),
                o[2] = (char)(0x80 | (cp & 0x3F)), k += 3;
            else
                o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
                o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F)), k += 4;
        }
        strs[i][k] = '\0';
        for (size_t j = 0; j < k; j++) fprintf(f, "%02x", (unsigned char)strs[i][j]);
        fprintf(f, "\n");
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s pretok-unicode < %s > %s", PY, REF, tpath("uni.in"),
             tpath("uni.out"));
    int rc = system(cmd);
    if (WIFEXITED(rc) && WEXITSTATUS(rc) == 3) return 0;
    if (rc != 0) {
        CHECK_MSG(0, "bpe_ref.py pretok-unicode failed");
        return 1;
    }
    f = fopen(tpath("uni.out"), "r");
    if (!f) return 1;
    static char line[1 << 16];
    int bad = 0;
    for (int i = 0; i < N && fgets(line, sizeof line, f); i++) {
        static char want[4096], got[4096];
        size_t k = 0;
        for (char *p = line; *p && *p != '\n';) {
            if (*p == ' ') {
                want[k++] = '|';
                p++;
                continue;
            }
            unsigned v;
            sscanf(p, "%2x", &v);
            want[k++] = (char)v;
            p += 2;
        }
        want[k] = '\0';
        split(strs[i], strlen(strs[i]), got);
        if (strcmp(got, want) != 0 && bad++ < 5)
            CHECK_MSG(0, "string %d: C \"%s\" vs regex \"%s\"", i, got, want);
    }
    fclose(f);
    CHECK_MSG(bad == 0, "%d of %d Unicode strings split differently", bad, N);
    return 1;
}

/* ---- merges by hand ------------------------------------------------------------------ */

static void expect_merge(const ef_tokenizer *t, size_t i, const char *text) {
    const char *got = ef_tokenizer_merge_text(t, i);
    CHECK_MSG(got && !strcmp(got, text), "merge %zu is \"%s\", want \"%s\"", i, got ? got : "(none)",
              text);
}

static void test_hand_merges(void) {
    /* one pre-token "aaabdaaabac": pairs aa 4, ab 2, bd da ba ac 1.
     * 1. aa (4)           -> [aa a b d aa a b a c]
     * 2. tie at 2 between (aa, a) = (256, 97) and (a, b) = (97, 98): the
     *    smaller left id wins -> ab   -> [aa ab d aa ab a c]
     * 3. (aa, ab) 2 -> "aaab"          -> [aaab d aaab a c]
     * every pair left occurs once: min_frequency 2 stops here. */
    const char *c = "aaabdaaabac";
    ef_bpe_train_stats st;
    ef_tokenizer *t = train(c, strlen(c), 1000, 2, NOSP, 0, &st);
    if (!t) return;
    CHECK(ef_tokenizer_n_merges(t) == 3 && ef_tokenizer_n_tokens(t) == 259 &&
          ef_tokenizer_n_specials(t) == 0 && ef_tokenizer_eot_id(t) == -1);
    expect_merge(t, 0, "a a");
    expect_merge(t, 1, "a b");
    expect_merge(t, 2, "aa ab");
    CHECK(st.merges == 3 && st.last_count == 2 && st.unique_words == 1 && st.pretokens == 1 &&
          st.corpus_tokens == 5 && st.skipped == 0 && st.corpus_bytes == 11);
    int32_t l, r, x;
    CHECK_OK(ef_tokenizer_merge(t, 2, &l, &r, &x));
    CHECK(l == 256 && r == 257 && x == 258);
    CHECK(ef_tokenizer_merge(t, 3, &l, &r, &x) == EF_ERR_RANGE);
    int32_t *ids;
    size_t n;
    CHECK_OK(ef_tokenizer_encode(t, c, strlen(c), 0, &ids, &n));
    CHECK(n == 5 && ids[0] == 258 && ids[1] == 'd' && ids[2] == 258 && ids[3] == 'a' && ids[4] == 'c');
    ef_free(ids);
    ef_tokenizer_free(t);

    /* min_frequency 1 goes on with count-1 pairs, smallest left id first:
     * (a, c) = (97, 99), then (d, aaab) = (100, 258), then (aaab, daaab),
     * then the whole word. */
    t = train(c, strlen(c), 256 + 7, 1, NOSP, 0, &st);
    if (!t) return;
    CHECK(ef_tokenizer_n_merges(t) == 7);
    expect_merge(t, 3, "a c");
    expect_merge(t, 4, "d aaab");
    expect_merge(t, 5, "aaab daaab");
    expect_merge(t, 6, "aaabdaaab ac");
    CHECK(st.corpus_tokens == 1);
    ef_tokenizer_free(t);

    /* words, frequencies and the space: "ab ab ab ab" is the pre-tokens
     * "ab" and " ab" x3; pairs (Ġ, a) 3, (a, b) 4 -> ab, then (Ġ, ab) 3 */
    c = "ab ab ab ab";
    t = train(c, strlen(c), 300, 2, NULL, 0, &st);
    if (!t) return;
    CHECK(ef_tokenizer_n_merges(t) == 2 && st.unique_words == 2 && st.pretokens == 4);
    expect_merge(t, 0, "a b");
    expect_merge(t, 1, "\xc4\xa0 ab");
    ef_tokenizer_free(t);

    /* a special token whose text is the byte-level text "Ġab" reserves the
     * bytes " ab": after "a b", the pair (Ġ, ab) is skipped for good, and no
     * other pair occurs twice */
    const char *sp[] = {"\xc4\xa0" "ab"};
    t = train(c, strlen(c), 300, 2, sp, 1, &st);
    if (!t) return;
    CHECK(st.skipped == 1 && ef_tokenizer_n_merges(t) == 1);
    expect_merge(t, 0, "a b");
    CHECK(ef_tokenizer_special_id(t, "\xc4\xa0" "ab") == 257);
    ef_tokenizer_free(t);

    /* special-token text in the corpus separates words and is never learned */
    c = "xy<|endoftext|>xy<|endoftext|>xy";
    t = train(c, strlen(c), 300, 2, NULL, 0, &st);
    if (!t) return;
    CHECK(ef_tokenizer_n_merges(t) == 1 && st.pretokens == 3 && st.corpus_tokens == 5);
    expect_merge(t, 0, "x y");
    ef_tokenizer_free(t);
}

/* ---- the trainer against the naive Python one --------------------------------------- */

/* Text made of a small random vocabulary of words, with punctuation, digits
 * and newlines: many ties and repeated pairs. */
static char *gen_text(size_t n_words, size_t *len) {
    static const char *syl[] = {"th", "e", "an", "d", "in", "g", "lo", "rd", "s", "a", "o",
                                "u", "sh", "al", "l", "be", "ing", "er", "x", "q"};
    char words[64][16];
    for (int w = 0; w < 64; w++) {
        words[w][0] = '\0';
        int ns = 1 + (int)(rnd() % 3);
        for (int s = 0; s < ns; s++) strcat(words[w], syl[rnd() % 20]);
        if (rnd() % 5 == 0) words[w][0] = (char)(words[w][0] - 32);
    }
    char *t = malloc(n_words * 24 + 1);
    size_t k = 0;
    for (size_t i = 0; i < n_words; i++) {
        /* Zipf-like: low word numbers are frequent */
        int w = (int)(rnd() % 64);
        w = w * (int)(rnd() % 64) / 64;
        if (i) {
            uint32_t r = rnd() % 100;
            if (r < 3) t[k++] = '\n';
            else if (r < 5) k += (size_t)sprintf(t + k, ", ");
            else if (r < 6) k += (size_t)sprintf(t + k, " %u", rnd() % 50);
            else if (r < 7) k += (size_t)sprintf(t + k, "'s ");
            else t[k++] = ' ';
        }
        k += (size_t)sprintf(t + k, "%s", words[w]);
    }
    t[k] = '\0';
    *len = k;
    return t;
}

static void test_against_python(void) {
    size_t len;
    char *text = gen_text(6000, &len);
    write_file(tpath("gen.txt"), text, len);
    const size_t vocab = 256 + 1 + 150;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s %s train %s %zu 2 > %s", PY, REF, tpath("gen.txt"), vocab,
             tpath("merges.py"));
    if (system(cmd) != 0) {
        CHECK_MSG(0, "bpe_ref.py train failed");
        free(text);
        return;
    }
    ef_tokenizer *t = train(text, len, vocab, 2, NULL, 0, NULL);
    FILE *f = fopen(tpath("merges.py"), "r");
    if (!t || !f) {
        CHECK(0);
        if (f) fclose(f);
        ef_tokenizer_free(t);
        free(text);
        return;
    }
    size_t m = 0;
    int a, b, bad = 0;
    while (fscanf(f, "%d %d", &a, &b) == 2) {
        int32_t l = -1, r = -1;
        ef_tokenizer_merge(t, m, &l, &r, NULL);
        if ((l != a || r != b) && bad++ < 3)
            CHECK_MSG(0, "merge %zu: C (%d, %d), Python (%d, %d)", m, l, r, a, b);
        m++;
    }
    fclose(f);
    CHECK_MSG(m == ef_tokenizer_n_merges(t) && m > 100, "Python %zu merges, C %zu", m,
              ef_tokenizer_n_merges(t));
    CHECK(bad == 0);
    ef_tokenizer_free(t);
    free(text);
}

/* ---- encode against a naive bpe() ----------------------------------------------------- */

/* GPT-2's bpe(): repeatedly find the lowest-ranked adjacent pair and merge
 * all its occurrences left to right. Quadratic, obviously right. */
static size_t naive_word(const ef_tokenizer *t, const uint8_t *w, size_t n, int32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        /* byte ids: find the token with these bytes */
        for (int32_t id = 0; id < 256; id++) {
            size_t l;
            const uint8_t *p = ef_tokenizer_token_bytes(t, id, &l);
            if (l == 1 && p[0] == w[i]) out[m++] = id;
        }
    }
    size_t nm = ef_tokenizer_n_merges(t);
    for (;;) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i + 1 < m; i++)
            for (size_t k = 0; k < nm && k < best; k++) {
                int32_t l, r;
                ef_tokenizer_merge(t, k, &l, &r, NULL);
                if (l == out[i] && r == out[i + 1]) best = k;
            }
        if (best == SIZE_MAX) return m;
        int32_t l, r, x;
        ef_tokenizer_merge(t, best, &l, &r, &x);
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && out[i] == l && out[i + 1] == r) {
                out[o++] = x;
                i += 2;
            } else {
                out[o++] = out[i++];
            }
        }
        m = o;
    }
}

static size_t naive_encode(const ef_tokenizer *t, const uint8_t *s, size_t n, int32_t *out) {
    size_t k = 0;
    for (size_t pos = 0; pos < n;) {
        size_t end = ef_pretoken_end(s, n, pos);
        k += naive_word(t, s + pos, end - pos, out + k);
        pos = end;
    }
    return k;
}

/* Random input: pieces of the training text, random bytes, UTF-8, spaces. */
static size_t random_input(uint8_t *buf, size_t cap, const char *text, size_t text_len) {
    size_t k = 0, want = rnd() % (cap - 64);
    while (k < want) {
        uint32_t r = rnd() % 10;
        if (r < 5 && text_len > 40) {
            size_t off = rnd() % (text_len - 32), l = 1 + rnd() % 30;
            memcpy(buf + k, text + off, l);
            k += l;
        } else if (r < 7) {
            buf[k++] = (uint8_t)rnd();
        } else if (r < 8) {
            static const char *u[] = {"\xc3\xa9", "\xe2\x80\x94", "\xf0\x9f\x98\x80", "\xd0\x96",
                                      "\xe4\xb8\xad", "\xcc\x81"};
            const char *p = u[rnd() % 6];
            memcpy(buf + k, p, strlen(p));
            k += strlen(p);
        } else if (r < 9) {
            size_t l = 1 + rnd() % 5;
            memset(buf + k, rnd() % 2 ? ' ' : '\n', l);
            k += l;
        } else {
            memcpy(buf + k, EF_TOK_EOT, strlen(EF_TOK_EOT));
            k += strlen(EF_TOK_EOT);
        }
    }
    return k;
}

static void test_encode_vs_naive_and_roundtrip(void) {
    size_t len;
    char *text = gen_text(20000, &len);
    ef_bpe_train_stats st;
    ef_tokenizer *t = train(text, len, 256 + 300 + 1, 2, NULL, 0, &st);
    if (!t) {
        free(text);
        return;
    }
    /* the training corpus encodes to the length the trainer counted */
    int32_t *ids;
    size_t n;
    CHECK_OK(ef_tokenizer_encode(t, text, len, EF_TOK_ALLOW_SPECIAL, &ids, &n));
    CHECK_MSG(n == st.corpus_tokens, "encode gives %zu tokens, training counted %llu", n,
              (unsigned long long)st.corpus_tokens);
    CHECK((double)len / (double)n > 2.5);
    ef_free(ids);

    enum { CAP = 700 };
    uint8_t buf[CAP];
    int32_t ref[CAP];
    int bad_naive = 0, bad_rt = 0, bad_sp = 0;
    for (int trial = 0; trial < 400; trial++) {
        size_t k = random_input(buf, CAP, text, len);
        /* ordinary bytes: naive bpe() agrees and decode gives them back */
        CHECK_OK(ef_tokenizer_encode(t, buf, k, 0, &ids, &n));
        size_t nr = naive_encode(t, buf, k, ref);
        if ((nr != n || memcmp(ref, ids, n * sizeof *ids) != 0) && bad_naive++ < 3)
            CHECK_MSG(0, "trial %d: encode differs from the naive bpe (%zu vs %zu ids)", trial, n, nr);
        char *back;
        size_t bl;
        CHECK_OK(ef_tokenizer_decode(t, ids, n, &back, &bl));
        if ((bl != k || memcmp(back, buf, k) != 0) && bad_rt++ < 3)
            CHECK_MSG(0, "trial %d: round trip lost bytes (%zu -> %zu)", trial, k, bl);
        for (size_t i = 0; i < n; i++)
            if (ids[i] == ef_tokenizer_eot_id(t) && bad_sp++ < 3)
                CHECK_MSG(0, "trial %d: special token without EF_TOK_ALLOW_SPECIAL", trial);
        ef_free(back);
        ef_free(ids);
        /* with special tokens: each "<|endoftext|>" becomes the one id, and
         * the rest is exactly the encoding of the pieces between */
        CHECK_OK(ef_tokenizer_encode(t, buf, k, EF_TOK_ALLOW_SPECIAL, &ids, &n));
        size_t expect = 0, start = 0, eots = 0;
        const char *sp = EF_TOK_EOT;
        size_t sl = strlen(sp);
        for (size_t i = 0; i <= k; i++) {
            bool at = i + sl <= k && memcmp(buf + i, sp, sl) == 0;
            if (i < k && !at) continue;
            expect += naive_encode(t, buf + start, i - start, ref + expect);
            if (at) {
                ref[expect++] = ef_tokenizer_eot_id(t);
                eots++;
                i += sl - 1;
            }
            start = i + 1;
        }
        if ((expect != n || memcmp(ref, ids, n * sizeof *ids) != 0) && bad_sp++ < 3)
            CHECK_MSG(0, "trial %d: special-token encoding differs (%zu vs %zu ids)", trial, n, expect);
        CHECK_OK(ef_tokenizer_decode(t, ids, n, &back, &bl));
        if ((bl != k || memcmp(back, buf, k) != 0) && bad_rt++ < 3)
            CHECK_MSG(0, "trial %d: round trip with specials lost bytes", trial);
        ef_free(back);
        ef_free(ids);
    }
    CHECK(bad_naive == 0 && bad_rt == 0 && bad_sp == 0);

    /* every single byte value and all of them at once */
    for (int b = 0; b < 256; b++) buf[b] = (uint8_t)b;
    for (size_t k = 0; k <= 256; k += 1) {
        char *back;
        size_t bl;
        CHECK_OK(ef_tokenizer_encode(t, buf, k, EF_TOK_ALLOW_SPECIAL, &ids, &n));
        CHECK_OK(ef_tokenizer_decode(t, ids, n, &back, &bl));
        CHECK(bl == k && memcmp(back, buf, k) == 0 && back[bl] == '\0');
        ef_free(back);
        ef_free(ids);
    }
    /* a long pre-token (one run of letters, one of spaces) takes the heap path */
    char *big = malloc(200000);
    for (size_t i = 0; i < 100000; i++) big[i] = "thelord"[i % 7];
    memset(big + 100000, ' ', 100000);
    double t0 = ef_now();
    CHECK_OK(ef_tokenizer_encode(t, big, 200000, 0, &ids, &n));
    CHECK_MSG(ef_now() - t0 < 2.0, "200 kB in two pre-tokens took %.2f s", ef_now() - t0);
    char *back;
    size_t bl;
    CHECK_OK(ef_tokenizer_decode(t, ids, n, &back, &bl));
    CHECK(bl == 200000 && memcmp(back, big, bl) == 0);
    ef_free(back);
    ef_free(ids);
    free(big);
    /* decode errors */
    int32_t badids[] = {5, (int32_t)ef_tokenizer_n_tokens(t)};
    back = (char *)&bl;
    CHECK(ef_tokenizer_decode(t, badids, 2, &back, &bl) == EF_ERR_RANGE && back == NULL);
    CHECK(strstr(ef_last_error(), "token 1 of 2") != NULL);
    badids[1] = -3;
    CHECK(ef_tokenizer_decode(t, badids, 2, &back, &bl) == EF_ERR_RANGE);
    CHECK(ef_tokenizer_encode(t, "x", 1, 0x10, &ids, &n) == EF_ERR_INVALID && ids == NULL);
    CHECK_OK(ef_tokenizer_encode(t, NULL, 0, 0, &ids, &n));
    CHECK(ids != NULL && n == 0);
    ef_free(ids);
    ef_tokenizer_free(t);
    free(text);
}

/* ---- files, vocabularies, determinism --------------------------------------------- */

static void test_files(void) {
    size_t len;
    char *text = gen_text(5000, &len);
    const char *sp[] = {EF_TOK_EOT, "<|pad|>"};
    ef_tokenizer *a = train(text, len, 256 + 120 + 2, 2, sp, 2, NULL);
    ef_tokenizer *b = train(text, len, 256 + 120 + 2, 2, sp, 2, NULL);
    if (!a || !b) {
        free(text);
        return;
    }
    CHECK(ef_tokenizer_special_id(a, "<|pad|>") == 256 + 120 + 1 && ef_tokenizer_eot_id(a) == 376);
    size_t la, lb;
    char *sa = serialize(a, &la), *sb = serialize(b, &lb);
    CHECK(sa && sb && la == lb && memcmp(sa, sb, la) == 0); /* same corpus, same bytes */
    CHECK(strstr(sa, "\"format\": \"edgefl-bpe\"") && strstr(sa, "\"pre_tokenizer\": \"gpt-2\""));

    /* save -> load gives the same file and the same encodings */
    CHECK_OK(ef_tokenizer_save(a, tpath("tok.json")));
    ef_tokenizer *c = NULL;
    CHECK_OK(ef_tokenizer_load(tpath("tok.json"), &c));
    if (c) {
        size_t lc;
        char *sc = serialize(c, &lc);
        CHECK(sc && lc == la && memcmp(sc, sa, la) == 0);
        ef_free(sc);
        int32_t *i1, *i2;
        size_t n1, n2;
        CHECK_OK(ef_tokenizer_encode(a, text, len, EF_TOK_ALLOW_SPECIAL, &i1, &n1));
        CHECK_OK(ef_tokenizer_encode(c, text, len, EF_TOK_ALLOW_SPECIAL, &i2, &n2));
        CHECK(n1 == n2 && memcmp(i1, i2, n1 * sizeof *i1) == 0);
        ef_free(i1);
        ef_free(i2);
    }

    /* GGUF arrays -> from_vocab -> the same tokenizer */
    size_t nt = ef_tokenizer_n_tokens(a), nm = ef_tokenizer_n_merges(a);
    const char **toks = malloc(nt * sizeof *toks), **merges = malloc(nm * sizeof *merges);
    int32_t *types = malloc(nt * sizeof *types);
    for (size_t i = 0; i < nt; i++) {
        toks[i] = ef_tokenizer_token_text(a, (int32_t)i);
        types[i] = ef_tokenizer_token_type(a, (int32_t)i);
    }
    for (size_t i = 0; i < nm; i++) merges[i] = ef_tokenizer_merge_text(a, i);
    ef_tokenizer *d = NULL;
    CHECK_OK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d));
    if (d) {
        size_t ld;
        char *s = serialize(d, &ld);
        CHECK(s && ld == la && memcmp(s, sa, la) == 0);
        ef_free(s);
        ef_tokenizer_free(d);
    }
    /* the same vocabulary in another order (reversed tokens) still works:
     * other ids, the same text */
    const char **rt = malloc(nt * sizeof *rt);
    int32_t *rty = malloc(nt * sizeof *rty);
    for (size_t i = 0; i < nt; i++) {
        rt[i] = toks[nt - 1 - i];
        rty[i] = types[nt - 1 - i];
    }
    d = NULL;
    CHECK_OK(ef_tokenizer_from_vocab(rt, rty, nt, merges, nm, &d));
    if (d) {
        int32_t *ids;
        size_t n;
        CHECK_OK(ef_tokenizer_encode(d, text, 3000, 0, &ids, &n));
        char *back;
        size_t bl;
        CHECK_OK(ef_tokenizer_decode(d, ids, n, &back, &bl));
        CHECK(bl == 3000 && memcmp(back, text, 3000) == 0);
        int32_t *ia;
        size_t na;
        CHECK_OK(ef_tokenizer_encode(a, text, 3000, 0, &ia, &na));
        CHECK(na == n);
        for (size_t i = 0; i < n && i < na; i++) CHECK(ia[i] == (int32_t)nt - 1 - ids[i]);
        ef_free(ia);
        ef_free(back);
        ef_free(ids);
        ef_tokenizer_free(d);
    }
    free(rt);
    free(rty);

    /* from_vocab faults */
    d = (ef_tokenizer *)&d;
    CHECK(ef_tokenizer_from_vocab(toks, types, 255, merges, 0, &d) == EF_ERR_FORMAT && d == NULL);
    const char *keep = merges[5];
    merges[5] = "zzzq xq";
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "merge 5") != NULL);
    merges[5] = merges[4]; /* the same pair twice */
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "same pair") != NULL);
    merges[5] = keep;
    types[3] = 4;
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d) == EF_ERR_UNSUPPORTED);
    types[3] = EF_TOK_NORMAL;
    const char *keep_t = toks[300];
    toks[300] = toks[301];
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "same text") != NULL);
    toks[300] = "a b";
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, nm, &d) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "byte-level alphabet") != NULL);
    toks[300] = keep_t;
    keep_t = toks[' '];
    toks[' '] = "\xc4\xa0\xc4\x80"; /* byte 0x20 has no token now */
    CHECK(ef_tokenizer_from_vocab(toks, types, nt, merges, 0, &d) == EF_ERR_FORMAT);
    CHECK(strstr(ef_last_error(), "0x20") != NULL);
    toks[' '] = keep_t;
    CHECK(d == NULL);
    free(toks);
    free(merges);
    free(types);

    ef_free(sa);
    ef_free(sb);
    ef_tokenizer_free(a);
    ef_tokenizer_free(b);
    ef_tokenizer_free(c);
    free(text);
}

/* A small valid file with one merge; `tail` replaces its merges and types. */
static void expect_bad_file(const char *content, ef_status want, const char *msg) {
    write_file(tpath("bad.json"), content, strlen(content));
    ef_tokenizer *t = (ef_tokenizer *)&t;
    ef_status st = ef_tokenizer_load(tpath("bad.json"), &t);
    CHECK_MSG(st == want && t == NULL, "got %s for %s", ef_strerror(st), msg);
    CHECK_MSG(strstr(ef_last_error(), msg) != NULL && strstr(ef_last_error(), "bad.json") != NULL,
              "error \"%s\" lacks \"%s\"", ef_last_error(), msg);
}

static void test_malformed(void) {
    ef_tokenizer *t = train("ab ab", 5, 257, 2, NOSP, 0, NULL);
    if (!t) return;
    CHECK(ef_tokenizer_n_tokens(t) == 257);
    size_t len;
    char *good = serialize(t, &len);
    ef_tokenizer_free(t);
    if (!good) return;
    CHECK(ef_tokenizer_parse(good, len, &t) == EF_OK);
    ef_tokenizer_free(t);
    char *buf = malloc(len + 256);
#define REPLACE(from, to, want, msg)                                                      \
    do {                                                                                  \
        char *at = strstr(good, from);                                                    \
        CHECK_MSG(at != NULL, "%s not in the file", from);                                \
        if (!at) break;                                                                   \
        size_t pre = (size_t)(at - good);                                                 \
        memcpy(buf, good, pre);                                                           \
        strcpy(buf + pre, to);                                                            \
        strcat(buf, at + strlen(from));                                                   \
        expect_bad_file(buf, want, msg);                                                  \
    } while (0)
    REPLACE("edgefl-bpe", "something", EF_ERR_FORMAT, "not an edgefl tokenizer");
    REPLACE("\"version\": 1", "\"version\": 2", EF_ERR_UNSUPPORTED, "newer");
    REPLACE("\"version\": 1", "\"version\": 1.5", EF_ERR_FORMAT, "version");
    REPLACE("\"version\": 1", "\"version\": 1e300", EF_ERR_FORMAT, "version");
    REPLACE("\"version\": 1,", "", EF_ERR_FORMAT, "\"version\" is missing");
    REPLACE("\"version\": 1,", "\"version\": 1, \"version\": 1,", EF_ERR_FORMAT, "twice");
    REPLACE("\"gpt-2\"", "\"llama3\"", EF_ERR_UNSUPPORTED, "llama3");
    REPLACE("\"a b\"", "\"a c\"", EF_ERR_FORMAT, "merge 0");
    REPLACE("\"a b\"", "\"ab\"", EF_ERR_FORMAT, "two tokens");
    REPLACE("\"a b\"", "\"a  b\"", EF_ERR_FORMAT, "merge 0");
    REPLACE("\"a b\"", "7", EF_ERR_FORMAT, "\"merges\"[0] is not a string");
    REPLACE("\"merges\": [", "\"merges\": {", EF_ERR_FORMAT, "not valid JSON");
    REPLACE("\"ab\"", "\"abc\"", EF_ERR_FORMAT, "joined text is not a token");
    REPLACE("\"ab\"", "\"a\\u0000\"", EF_ERR_FORMAT, "NUL");
    REPLACE("\"ab\"", "\"a \"", EF_ERR_FORMAT, "byte-level alphabet");
    REPLACE("\"ab\"", "\"a\\u4e2d\"", EF_ERR_FORMAT, "token 256");
    REPLACE("\"ab\"", "\"\"", EF_ERR_FORMAT, "empty");
    REPLACE("\"ab\"", "\"a\"", EF_ERR_FORMAT, "same text");
    REPLACE("\"ab\"", "\"ab\",\n\"cd\"", EF_ERR_FORMAT, "token_types");
    REPLACE(",\n1]", "]", EF_ERR_FORMAT, "token_types");
    REPLACE("\n1]", "\n9]", EF_ERR_FORMAT, "type 9");
    REPLACE("\"token_types\": [1,", "\"token_types\": [3,", EF_ERR_FORMAT, "0x00");
    REPLACE("\n1]", "\n\"1\"]", EF_ERR_FORMAT, "not an integer");
    REPLACE("\"tokens\": [", "\"tokens\": 5, \"x\": [", EF_ERR_FORMAT, "\"tokens\" is not an array");
    REPLACE("\n}\n", "\n}\n{}", EF_ERR_FORMAT, "text after");
    expect_bad_file("", EF_ERR_FORMAT, "empty");
    expect_bad_file("[1,2]", EF_ERR_FORMAT, "not a JSON object");
    expect_bad_file("{\"format\": \"edgefl-bpe\"", EF_ERR_FORMAT, "not valid JSON");
    /* truncations at every 50th byte all fail cleanly */
    int ok_trunc = 0;
    for (size_t cut = 0; cut < len - 2; cut += 50) {
        ef_tokenizer *x = NULL;
        if (ef_tokenizer_parse(good, cut, &x) == EF_OK) ok_trunc++;
        ef_tokenizer_free(x);
    }
    CHECK(ok_trunc == 0);
    ef_tokenizer *x = (ef_tokenizer *)&x;
    CHECK(ef_tokenizer_load(tpath("missing.json"), &x) == EF_ERR_IO && x == NULL);
    /* a failed save leaves nothing behind */
    t = NULL;
    CHECK_OK(ef_tokenizer_parse(good, len, &t));
    CHECK(ef_tokenizer_save(t, tpath("no/such/dir/tok.json")) == EF_ERR_IO);
    ef_tokenizer_free(t);
#undef REPLACE
    free(buf);
    ef_free(good);
}

static void test_bad_args(void) {
    ef_tokenizer *t = (ef_tokenizer *)&t;
    ef_bpe_train_opts o;
    ef_bpe_train_opts_init(&o);
    CHECK(ef_bpe_train("abc", 3, 256, &o, &t) == EF_ERR_INVALID && t == NULL); /* no room for EOT */
    CHECK(ef_bpe_train("abc", 3, (size_t)EF_TOK_MAX_VOCAB + 1, &o, &t) == EF_ERR_INVALID);
    o.min_frequency = 0;
    CHECK(ef_bpe_train("abc", 3, 300, &o, &t) == EF_ERR_INVALID);
    ef_bpe_train_opts_init(&o);
    const char *sp1[] = {"x", "<s>"};
    o.specials = sp1;
    o.n_specials = 2;
    CHECK(ef_bpe_train("abc", 3, 300, &o, &t) == EF_ERR_INVALID); /* "x" is byte x's text */
    CHECK(strstr(ef_last_error(), "byte token") != NULL);
    const char *sp2[] = {"<s>", "<s>"};
    o.specials = sp2;
    CHECK(ef_bpe_train("abc", 3, 300, &o, &t) == EF_ERR_INVALID);
    const char *sp3[] = {"\xff"};
    o.specials = sp3;
    o.n_specials = 1;
    CHECK(ef_bpe_train("abc", 3, 300, &o, &t) == EF_ERR_INVALID);
    const char *sp4[] = {""};
    o.specials = sp4;
    CHECK(ef_bpe_train("abc", 3, 300, &o, &t) == EF_ERR_INVALID);
    CHECK(ef_bpe_train(NULL, 3, 300, NULL, &t) == EF_ERR_INVALID && t == NULL);
    /* NULL options are the defaults; a corpus with too few pairs stops early */
    CHECK_OK(ef_bpe_train("abab", 4, 1000, NULL, &t));
    if (t) {
        CHECK(ef_tokenizer_n_merges(t) == 1 && ef_tokenizer_eot_id(t) == 257);
        ef_tokenizer_free(t);
    }
    ef_tokenizer_free(NULL);
}

/* ---- out of memory ------------------------------------------------------------------ */

static long g_alloc_left;
static void *oom_malloc(void *u, size_t n) {
    (void)u;
    return g_alloc_left-- > 0 ? malloc(n) : NULL;
}
static void *oom_realloc(void *u, void *p, size_t n) {
    (void)u;
    return g_alloc_left-- > 0 ? realloc(p, n) : NULL;
}
static void oom_free(void *u, void *p) {
    (void)u;
    free(p);
}

static void test_oom(void) {
    ef_allocator al = {oom_malloc, oom_realloc, oom_free, NULL};
    size_t len;
    char *text = gen_text(400, &len);
    /* every allocation of training fails once in turn: a clean EF_ERR_NOMEM
     * (the sanitizer build checks for leaks), then success */
    int trained = 0, bad = 0;
    for (long k = 0; k < 5000 && !trained; k++) {
        g_alloc_left = k;
        ef_set_allocator(&al);
        ef_tokenizer *t = (ef_tokenizer *)&t;
        ef_status st = ef_bpe_train(text, len, 256 + 40, NULL, &t);
        ef_set_allocator(NULL);
        if (st == EF_OK) {
            trained = 1;
            CHECK(t != NULL && t != (ef_tokenizer *)&t);
            if (!t || t == (ef_tokenizer *)&t) break;
            /* now encode, decode and serialize under the same failures */
            int encoded = 0;
            for (long j = 0; j < 2000 && !encoded; j++) {
                int32_t *ids = NULL;
                size_t n;
                char *s = NULL;
                size_t sl;
                g_alloc_left = j;
                ef_set_allocator(&al);
                ef_status e1 = ef_tokenizer_encode(t, text, len, 0, &ids, &n);
                ef_status e2 = e1 == EF_OK ? ef_tokenizer_decode(t, ids, n, &s, &sl) : e1;
                ef_status e3 = EF_ERR_NOMEM;
                char *ser = NULL;
                size_t serl;
                if (e2 == EF_OK) e3 = ef_tokenizer_serialize(t, &ser, &serl);
                ef_set_allocator(NULL);
                if (e3 == EF_OK) {
                    encoded = 1;
                    CHECK(sl == len && memcmp(s, text, len) == 0);
                } else if ((e1 != EF_OK && e1 != EF_ERR_NOMEM) || (e2 != EF_OK && e2 != EF_ERR_NOMEM)) {
                    bad++;
                }
                ef_free(ids);
                ef_free(s);
                ef_free(ser);
            }
            CHECK(encoded);
            ef_tokenizer_free(t);
        } else if ((st != EF_ERR_NOMEM || t != NULL) && bad++ < 3) {
            CHECK_MSG(0, "allocation %ld: %s (%s)", k, ef_strerror(st), ef_last_error());
        }
    }
    CHECK(trained && bad == 0);
    free(text);
}

/* ---- concurrent encoding ------------------------------------------------------------ */

typedef struct job {
    const ef_tokenizer *t;
    const char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} job;

static void *encode_job(void *p) {
    job *j = p;
    for (int r = 0; r < 3; r++) {
        ef_free(j->ids);
        if (ef_tokenizer_encode(j->t, j->text, j->len, 0, &j->ids, &j->n) != EF_OK) j->ids = NULL;
    }
    return NULL;
}

static void test_threads(void) {
    size_t len;
    char *text = gen_text(30000, &len);
    ef_tokenizer *t = train(text, len, 600, 2, NULL, 0, NULL);
    if (!t) {
        free(text);
        return;
    }
    job j[3] = {{t, text, len, NULL, 0}, {t, text, len, NULL, 0}, {t, text + 7, len - 7, NULL, 0}};
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, encode_job, &j[i]);
    for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
    int32_t *ids;
    size_t n;
    CHECK_OK(ef_tokenizer_encode(t, text, len, 0, &ids, &n));
    CHECK(j[0].ids && j[1].ids && j[2].ids && j[0].n == n && j[1].n == n);
    if (j[0].ids && j[1].ids && j[0].n == n && j[1].n == n)
        CHECK(!memcmp(j[0].ids, ids, n * 4) && !memcmp(j[1].ids, ids, n * 4));
    ef_free(ids);
    for (int i = 0; i < 3; i++) ef_free(j[i].ids);
    ef_tokenizer_free(t);
    free(text);
}

int main(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/edgefl-test-bpe-%d", (int)getpid());
    tu_rmtree(g_dir);
    if (mkdir(g_dir, 0700) != 0) {
        perror(g_dir);
        return 1;
    }
    g_no_python = access(PY, X_OK) != 0;
    test_byte_level();
    test_pretok_cases();
    int have_regex = 0;
    if (!g_no_python) {
        test_pretok_python();
        have_regex = test_pretok_unicode();
        if (!have_regex)
            printf("test_bpe: note: Python's regex module is missing (Debian python3-regex): "
                   "no full-Unicode pre-tokenizer check\n");
    }
    test_hand_merges();
    if (!g_no_python) test_against_python();
    test_encode_vs_naive_and_roundtrip();
    test_files();
    test_malformed();
    test_bad_args();
    test_oom();
    test_threads();
    tu_rmtree(g_dir);
    int rc = tu_finish("test_bpe");
    if (rc == 0 && g_no_python) {
        printf("test_bpe: SKIPPED the Python reference checks: %s is not installed\n", PY);
        return TU_SKIP;
    }
    return rc;
}

/*
 * Pre-tokenization for the byte-level BPE tokenizer: GPT-2's split
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * written as a hand-made scanner (no regex library), plus GPT-2's
 * byte-to-unicode table used for the GGUF text of tokens.
 *
 * The scanner tries the alternatives in the regex's order at each start
 * position, which is what the regex engine does: the contractions (lower
 * case only, as in GPT-2), then an optional single space followed by a run of
 * letters, of digits, or of "other" characters, then whitespace. A whitespace
 * run followed by more text leaves its last character to the next pre-token
 * (the (?!\S) lookahead), so " word" keeps its space.
 *
 * Character classes: ASCII exactly as the regex; other valid UTF-8 from the
 * range tables of bpe_unicode.h, generated from the Unicode database
 * (scripts/gen_bpe_unicode.py): White_Space, numbers (N*) and "other" (marks,
 * punctuation, symbols, controls, unassigned code points); the rest are
 * letters (L*).
 * Bytes that do not start a valid UTF-8 sequence are "other", one byte each.
 */
#include <string.h>

#include "bpe_internal.h"
#include "bpe_unicode.h"
#include "core/strbuf.h"

#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static bool in_ranges(const cp_range *r, size_t n, uint32_t cp) {
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < r[mid].lo) hi = mid;
        else if (cp > r[mid].hi) lo = mid + 1;
        else return true;
    }
    return false;
}

int bpe_cp_class(uint32_t cp) {
    if (in_ranges(SPACE_RANGES, N_OF(SPACE_RANGES), cp)) return BPE_SPACE;
    if (in_ranges(NUMBER_RANGES, N_OF(NUMBER_RANGES), cp)) return BPE_NUMBER;
    if (in_ranges(OTHER_RANGES, N_OF(OTHER_RANGES), cp)) return BPE_OTHER;
    return BPE_LETTER;
}

static bool sorted_disjoint(const cp_range *r, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (r[i].lo > r[i].hi || r[i].lo < 0x80) return false;
        if (i && r[i].lo <= r[i - 1].hi) return false;
    }
    return true;
}

bool bpe_tables_ok(void) {
    if (!sorted_disjoint(SPACE_RANGES, N_OF(SPACE_RANGES)) ||
        !sorted_disjoint(NUMBER_RANGES, N_OF(NUMBER_RANGES)) ||
        !sorted_disjoint(OTHER_RANGES, N_OF(OTHER_RANGES)))
        return false;
    /* no code point in two tables */
    const cp_range *t[3] = {SPACE_RANGES, NUMBER_RANGES, OTHER_RANGES};
    size_t n[3] = {N_OF(SPACE_RANGES), N_OF(NUMBER_RANGES), N_OF(OTHER_RANGES)};
    for (int a = 0; a < 3; a++)
        for (int b = a + 1; b < 3; b++)
            for (size_t i = 0; i < n[a]; i++)
                for (size_t j = 0; j < n[b]; j++)
                    if (t[a][i].lo <= t[b][j].hi && t[b][j].lo <= t[a][i].hi) return false;
    return true;
}

/* ASCII classes: letters, digits, \t \n \v \f \r and space, the rest other. */
static int ascii_class(uint8_t c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return BPE_LETTER;
    if (c >= '0' && c <= '9') return BPE_NUMBER;
    if (c == ' ' || (c >= '\t' && c <= '\r')) return BPE_SPACE;
    return BPE_OTHER;
}

/* Class of the character at t[pos] (pos < len); *n gets its length in bytes. */
static int char_class(const uint8_t *t, size_t len, size_t pos, size_t *n) {
    uint8_t c = t[pos];
    if (c < 0x80) {
        *n = 1;
        return ascii_class(c);
    }
    size_t k = ef__utf8_seq(t + pos, len - pos);
    if (k == 0) {
        *n = 1;
        return BPE_OTHER;
    }
    uint32_t cp;
    if (k == 2) cp = (uint32_t)(c & 0x1F) << 6 | (t[pos + 1] & 0x3F);
    else if (k == 3)
        cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(t[pos + 1] & 0x3F) << 6 | (t[pos + 2] & 0x3F);
    else
        cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(t[pos + 1] & 0x3F) << 12 |
             (uint32_t)(t[pos + 2] & 0x3F) << 6 | (t[pos + 3] & 0x3F);
    *n = k;
    return bpe_cp_class(cp);
}

/* End of the run of characters of class `cls` starting at pos. */
static size_t run_end(const uint8_t *t, size_t len, size_t pos, int cls) {
    while (pos < len) {
        size_t n;
        if (char_class(t, len, pos, &n) != cls) break;
        pos += n;
    }
    return pos;
}

size_t ef_pretoken_end(const void *text, size_t len, size_t pos) {
    const uint8_t *t = text;
    if (pos >= len) return len;
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (t[pos] == '\'' && pos + 1 < len) {
        uint8_t a = t[pos + 1];
        if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
        if (pos + 2 < len) {
            uint8_t b = t[pos + 2];
            if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
                return pos + 3;
        }
    }
    size_t n;
    int cls = char_class(t, len, pos, &n);
    /* " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+": one optional space first */
    if (t[pos] == ' ' && pos + 1 < len) {
        size_t n2;
        int cls2 = char_class(t, len, pos + 1, &n2);
        if (cls2 != BPE_SPACE) return run_end(t, len, pos + 1, cls2);
    }
    if (cls != BPE_SPACE) return run_end(t, len, pos, cls);
    /* "\s+(?!\S)|\s+": a run of k whitespace characters followed by more
     * text gives up its last character, unless k == 1 */
    size_t end = pos, last = pos, k = 0;
    while (end < len) {
        size_t m;
        if (char_class(t, len, end, &m) != BPE_SPACE) break;
        last = end;
        end += m;
        k++;
    }
    if (k > 1 && end < len) return last;
    return end;
}

/* ---- GPT-2's bytes_to_unicode ------------------------------------------------- */

static bool printable_byte(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t bpe_byte_cp(uint8_t b) {
    /* the n-th byte that is not printable maps to 256 + n: 0x00..0x20 are
     * n = 0..32, 0x7F..0xA0 are n = 33..66, 0xAD is n = 67 */
    if (printable_byte(b)) return b;
    if (b <= 0x20) return 256u + b;
    if (b <= 0xA0) return 256u + 33u + (b - 0x7Fu);
    return 256u + 67u;
}

int bpe_cp_byte(uint32_t cp) {
    if (cp < 256) return printable_byte(cp) ? (int)cp : -1;
    if (cp <= 256 + 32) return (int)(cp - 256);
    if (cp <= 256 + 66) return (int)(cp - 256 - 33 + 0x7F);
    if (cp == 256 + 67) return 0xAD;
    return -1;
}

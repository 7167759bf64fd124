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
 * Character classes: ASCII exactly as the regex; other valid UTF-8 through
 * the range tables below, a compact approximation of the Unicode categories
 * (White_Space; categories N; categories M, P, S and C as "other"); any code point not in a
 * table is a letter, which holds for the large alphabets and ideographs.
 * Bytes that do not start a valid UTF-8 sequence are "other", one byte each.
 */
#include <string.h>

#include "bpe_internal.h"
#include "core/strbuf.h"

typedef struct cp_range {
    uint32_t lo, hi; /* inclusive */
} cp_range;

/* White_Space beyond ASCII. */
static const cp_range SPACE_RANGES[] = {
    {0x85, 0x85},     {0xA0, 0xA0},     {0x1680, 0x1680}, {0x2000, 0x200A},
    {0x2028, 0x2029}, {0x202F, 0x202F}, {0x205F, 0x205F}, {0x3000, 0x3000},
};

/* Digits and number forms (Nd, Nl, No) beyond ASCII. */
static const cp_range NUMBER_RANGES[] = {
    {0xB2, 0xB3},       {0xB9, 0xB9},       {0xBC, 0xBE},       {0x0660, 0x0669},
    {0x06F0, 0x06F9},   {0x07C0, 0x07C9},   {0x0966, 0x096F},   {0x09E6, 0x09EF},
    {0x0A66, 0x0A6F},   {0x0AE6, 0x0AEF},   {0x0B66, 0x0B6F},   {0x0BE6, 0x0BF2},
    {0x0C66, 0x0C6F},   {0x0CE6, 0x0CEF},   {0x0D66, 0x0D6F},   {0x0E50, 0x0E59},
    {0x0ED0, 0x0ED9},   {0x0F20, 0x0F33},   {0x1040, 0x1049},   {0x16EE, 0x16F0},
    {0x17E0, 0x17E9},   {0x1810, 0x1819},   {0x2070, 0x2070},   {0x2074, 0x2079},
    {0x2080, 0x2089},   {0x2150, 0x2182},   {0x2185, 0x2189},   {0x2460, 0x249B},
    {0x24EA, 0x24FF},   {0x2776, 0x2793},   {0x3007, 0x3007},   {0x3021, 0x3029},
    {0x3038, 0x303A},   {0x3192, 0x3195},   {0x3220, 0x3229},   {0x3248, 0x324F},
    {0x3251, 0x325F},   {0x3280, 0x3289},   {0x32B1, 0x32BF},   {0xFF10, 0xFF19},
    {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C},
};

/* Combining marks, punctuation, symbols, controls, format and private-use
 * characters beyond ASCII: neither letters, numbers nor whitespace. */
static const cp_range OTHER_RANGES[] = {
    {0x80, 0x84},       {0x86, 0x9F},       {0xA1, 0xA9},       {0xAB, 0xB1},
    {0xB4, 0xB4},       {0xB6, 0xB8},       {0xBB, 0xBB},       {0xBF, 0xBF},
    {0xD7, 0xD7},       {0xF7, 0xF7},       {0x02C2, 0x02C5},   {0x02D2, 0x02DF},
    {0x02E5, 0x02EB},   {0x02ED, 0x02ED},   {0x02EF, 0x036F},   {0x0375, 0x0375},
    {0x037E, 0x037E},   {0x0384, 0x0385},   {0x0387, 0x0387},   {0x03F6, 0x03F6},
    {0x0482, 0x0489},   {0x055A, 0x055F},   {0x0589, 0x058A},   {0x058D, 0x058F},
    {0x0591, 0x05C7},   {0x05F3, 0x05F4},   {0x0600, 0x061F},   {0x064B, 0x065F},
    {0x066A, 0x066D},   {0x0670, 0x0670},   {0x06D4, 0x06D4},   {0x06D6, 0x06ED},
    {0x0900, 0x0903},   {0x093A, 0x093C},   {0x093E, 0x094F},   {0x0951, 0x0957},
    {0x0962, 0x0965},   {0x0970, 0x0970},   {0x0E31, 0x0E31},   {0x0E34, 0x0E3F},
    {0x0E47, 0x0E4F},   {0x0E5A, 0x0E5B},   {0x10FB, 0x10FB},   {0x1360, 0x1368},
    {0x166D, 0x166E},   {0x16EB, 0x16ED},   {0x17D4, 0x17D6},   {0x17D8, 0x17DB},
    {0x1800, 0x180A},   {0x1AB0, 0x1AFF},   {0x1DC0, 0x1DFF},   {0x1FBD, 0x1FBD},
    {0x1FBF, 0x1FC1},   {0x1FCD, 0x1FCF},   {0x1FDD, 0x1FDF},   {0x1FED, 0x1FEF},
    {0x1FFD, 0x1FFE},   {0x200B, 0x2027},   {0x202A, 0x202E},   {0x2030, 0x205E},
    {0x2060, 0x206F},   {0x207A, 0x207E},   {0x208A, 0x208E},   {0x20A0, 0x20FF},
    {0x2100, 0x2101},   {0x2103, 0x2106},   {0x2108, 0x2109},   {0x2114, 0x2114},
    {0x2116, 0x2118},   {0x211E, 0x2123},   {0x2125, 0x2125},   {0x2127, 0x2127},
    {0x2129, 0x2129},   {0x212E, 0x212E},   {0x213A, 0x213B},   {0x2140, 0x2144},
    {0x214A, 0x214D},   {0x214F, 0x214F},   {0x218A, 0x218B},   {0x2190, 0x245F},
    {0x249C, 0x24E9},   {0x2500, 0x2775},   {0x2794, 0x2BFF},   {0x2CE5, 0x2CEA},
    {0x2CF9, 0x2CFC},   {0x2CFE, 0x2CFF},   {0x2E00, 0x2FFF},   {0x3001, 0x3004},
    {0x3008, 0x3020},   {0x302A, 0x3030},   {0x3036, 0x3037},   {0x303D, 0x303F},
    {0x3099, 0x309C},   {0x30A0, 0x30A0},   {0x30FB, 0x30FB},   {0x3190, 0x3191},
    {0x3196, 0x319F},   {0x31C0, 0x31E3},   {0x3200, 0x321E},   {0x322A, 0x3247},
    {0x3250, 0x3250},   {0x3260, 0x327F},   {0x328A, 0x32B0},   {0x32C0, 0x33FF},
    {0x4DC0, 0x4DFF},   {0xA490, 0xA4C6},   {0xA4FE, 0xA4FF},   {0xA60D, 0xA60F},
    {0xA673, 0xA673},   {0xA67E, 0xA67E},   {0xA6F2, 0xA6F7},   {0xA700, 0xA716},
    {0xA720, 0xA721},   {0xA789, 0xA78A},   {0xE000, 0xF8FF},   {0xFB29, 0xFB29},
    {0xFD3E, 0xFD3F},   {0xFDFC, 0xFDFD},   {0xFE00, 0xFE19},   {0xFE20, 0xFE52},
    {0xFE54, 0xFE66},   {0xFE68, 0xFE6B},   {0xFEFF, 0xFEFF},   {0xFF01, 0xFF0F},
    {0xFF1A, 0xFF20},   {0xFF3B, 0xFF40},   {0xFF5B, 0xFF65},   {0xFFE0, 0xFFEE},
    {0xFFF9, 0xFFFD},   {0x1D000, 0x1D24F}, {0x1D300, 0x1D35F}, {0x1F000, 0x1F0FF},
    {0x1F10D, 0x1FAFF}, {0xE0001, 0xE01EF}, {0xF0000, 0x10FFFF},
};

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

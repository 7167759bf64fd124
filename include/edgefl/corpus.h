/*
 * Text corpora for the small language models: a deterministic held-out split
 * of a line-oriented text (the King James Bible, one verse per line, or any
 * text file) into training and validation lines (docs/slm.md, "Tokenizer and
 * corpus").
 *
 * Which lines are held out depends only on a hash of each line's key (the
 * verse label, or the line's text), never on the order of lines or on a seed:
 * the same verse is always on the same side, and a larger fraction holds out
 * a superset of a smaller one.
 */
#ifndef EDGEFL_CORPUS_H
#define EDGEFL_CORPUS_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where Debian's bible-kjv installs the `bible` program, and the reference
 * range that prints the whole KJV, one "Label text" verse per line
 * (`bible -f 'Gen1:1-Rev22:21'`; -f turns pretty-printing off). */
#define EF_KJV_BIBLE "/usr/bin/bible"
#define EF_KJV_RANGE "Gen1:1-Rev22:21"
/* Verses in the KJV. */
#define EF_KJV_VERSES 31102
/* Default held-out fraction. */
#define EF_CORPUS_HOLDOUT 0.015

/*
 * The hash that decides held-out lines: FNV-1a 64 over the key's bytes
 * (offset basis 0xcbf29ce484222325, prime 0x100000001b3), then the
 * splitmix64 finalizer (x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27;
 * x *= 0x94d049bb133111eb; x ^= x >> 31). A key is held out when
 * (hash >> 11) * 2^-53 < fraction.
 */
EF_API uint64_t ef_corpus_hash(const void *key, size_t len);

/* 1 if the key is held out at `fraction` (0..1), else 0. */
EF_API int ef_corpus_heldout(const void *key, size_t len, double fraction);

/* What decides a line's side. */
typedef enum ef_corpus_key {
    EF_CORPUS_BY_LABEL = 0, /* the first field (up to the first space): a verse label
                               such as "Ge1:1"; every non-empty line must have one */
    EF_CORPUS_BY_TEXT = 1   /* the whole line; lines of only whitespace stay in training */
} ef_corpus_key;

/* Counts of a split. */
typedef struct ef_corpus_stats {
    size_t train_lines, valid_lines;
    size_t train_bytes, valid_bytes;
    size_t skipped_empty; /* empty lines dropped (BY_LABEL only) */
} ef_corpus_stats;

/*
 * Splits `len` bytes of line-oriented text. Lines end at "\n" (a "\r" before
 * it is dropped, a last line without "\n" counts); each output line ends with
 * "\n". BY_LABEL drops empty lines and, when `drop_labels` is set, the label
 * and the space after it (the text alone is written). *train and *valid are
 * new NUL-terminated buffers (ef_free them) of *train_len and *valid_len
 * bytes. Fails with EF_ERR_FORMAT (BY_LABEL and a non-empty line without a
 * label: the message gives the line number), EF_ERR_INVALID (fraction outside
 * [0, 1], drop_labels with BY_TEXT), EF_ERR_NOMEM; then the outputs are NULL.
 */
EF_API ef_status ef_corpus_split(const char *text, size_t len, ef_corpus_key key,
                                 double fraction, int drop_labels, char **train,
                                 size_t *train_len, char **valid, size_t *valid_len,
                                 ef_corpus_stats *stats);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_CORPUS_H */

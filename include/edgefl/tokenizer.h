/*
 * Byte-level BPE tokenizer in the style of GPT-2, for the small language
 * models (docs/slm.md, "Tokenizer and corpus").
 *
 * Token ids: a tokenizer trained here has ids 0..255 for the single bytes
 * (id b is byte b), then one id per merge in merge order (id 256 + k is merge
 * k), then the special tokens ("<|endoftext|>" by default). A tokenizer made
 * from GGUF arrays (ef_tokenizer_from_vocab) may order its tokens freely.
 *
 * Text is first cut into pre-tokens like GPT-2's regex
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * (implemented by hand, no regex library; see ef_pretoken_end), then the
 * merges are applied inside each pre-token, lowest rank first, leftmost first
 * among equal ranks. Every byte string, valid UTF-8 or not, encodes, and
 * decoding gives back exactly the same bytes.
 *
 * Thread safety: a tokenizer is immutable after construction except for its
 * encode cache, which is guarded by a lock; every function here may be called
 * from several threads on the same handle.
 */
#ifndef EDGEFL_TOKENIZER_H
#define EDGEFL_TOKENIZER_H

#include "edgefl/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The default special token: separates documents (verses), used as BOS/EOS. */
#define EF_TOK_EOT "<|endoftext|>"

/* GGUF metadata for this tokenizer: tokenizer.ggml.model and tokenizer.ggml.pre
 * (llama.cpp's pre-tokenizer of that name is the GPT-2 regex above). */
#define EF_TOK_GGUF_MODEL "gpt2"
#define EF_TOK_GGUF_PRE "gpt-2"

/* Largest vocabulary accepted (ids are int32_t). */
#define EF_TOK_MAX_VOCAB (1 << 24)
/* Longest special-token text in bytes. */
#define EF_TOK_MAX_SPECIAL_LEN 256

typedef struct ef_tokenizer ef_tokenizer;

/* Token types; the values are GGUF's tokenizer.ggml.token_type values. */
typedef enum ef_tok_type {
    EF_TOK_NORMAL = 1,  /* a byte or a merge */
    EF_TOK_CONTROL = 3  /* a special token such as "<|endoftext|>" */
} ef_tok_type;

/* ---- training ------------------------------------------------------------ */

/* What training measured (filled when ef_bpe_train_opts.stats is set). */
typedef struct ef_bpe_train_stats {
    size_t corpus_bytes;    /* bytes of the corpus */
    size_t pretokens;       /* pre-tokens in the corpus (special-token text excluded) */
    size_t unique_words;    /* distinct pre-tokens */
    size_t merges;          /* merges learned */
    size_t skipped;         /* pairs not merged because their bytes were already a token */
    uint64_t last_count;    /* occurrences of the last merged pair */
    uint64_t corpus_tokens; /* tokens of the corpus after all merges (= the length of
                               ef_tokenizer_encode with EF_TOK_ALLOW_SPECIAL) */
    double seconds_count;   /* pre-tokenizing and counting */
    double seconds_merge;   /* merging */
} ef_bpe_train_stats;

/* Training options; initialize with ef_bpe_train_opts_init. */
typedef struct ef_bpe_train_opts {
    /* Special tokens, appended after the merges in this order. NULL: just
     * EF_TOK_EOT. To have none, pass a non-NULL array and n_specials = 0.
     * At most 1024, each non-empty valid UTF-8 without NUL, at most
     * EF_TOK_MAX_SPECIAL_LEN bytes, unique, and not the text of a byte token.
     * Their text in the corpus separates pre-tokens and is never learned. */
    const char *const *specials;
    size_t n_specials;
    /* Training stops early when the most frequent pair occurs fewer times
     * (>= 1; default 2: a pair seen once is not worth a token). */
    uint64_t min_frequency;
    /* Called every few merges and once at the end with (merges done, merges
     * wanted); may be NULL. */
    void (*progress)(void *user, size_t done, size_t total);
    void *user;
    /* Filled on success when not NULL. */
    ef_bpe_train_stats *stats;
} ef_bpe_train_opts;

/* Sets the defaults: specials NULL (EF_TOK_EOT), min_frequency 2, no callback. */
EF_API void ef_bpe_train_opts_init(ef_bpe_train_opts *o);

/*
 * Learns a byte-level BPE tokenizer of at most `vocab_size` tokens (256 byte
 * tokens + merges + specials) from `len` bytes of `corpus` (any bytes).
 *
 * The corpus is cut at special-token text, pre-tokenized, and the distinct
 * pre-tokens counted; then the most frequent adjacent pair of tokens (counted
 * over all pre-tokens, weighted by frequency) is merged into a new token,
 * repeatedly, with incremental pair counts, an index from each pair to the
 * words that contain it, and a lazily updated max-heap. Ties: the pair whose
 * left token id is smaller wins, then the smaller right token id -- ids grow
 * in creation order, so the result does not depend on hashing or memory
 * layout, and the same corpus always gives the same tokenizer. A pair whose
 * bytes already form a token (another split of the same string) is skipped
 * for good, so every token has distinct bytes. Training ends with fewer
 * tokens than asked when no pair occurs min_frequency times.
 *
 * Fails with EF_ERR_INVALID (vocab_size < 256 + specials or above
 * EF_TOK_MAX_VOCAB, bad specials, min_frequency 0) or EF_ERR_NOMEM. On
 * success *out is a new tokenizer (free with ef_tokenizer_free); on failure
 * *out is NULL.
 */
EF_API ef_status ef_bpe_train(const void *corpus, size_t len, size_t vocab_size,
                              const ef_bpe_train_opts *opts, ef_tokenizer **out);

/* Frees a tokenizer. NULL is a no-op. */
EF_API void ef_tokenizer_free(ef_tokenizer *tok);

/* ---- encode / decode ---------------------------------------------------------- */

/* ef_tokenizer_encode flag: text equal to a special token becomes that token
 * (leftmost match first, the longest special at one position). Without it,
 * special-token text is encoded as ordinary bytes. */
#define EF_TOK_ALLOW_SPECIAL 1u

/*
 * Encodes `len` bytes of `text` (any bytes) into token ids. *ids is a new
 * array of *n_ids ids (ef_free it; non-NULL even when empty). Pre-tokens up
 * to 64 bytes are cached in the tokenizer. Fails with EF_ERR_INVALID (NULL
 * arguments, unknown flags), EF_ERR_RANGE (len above INT32_MAX: encode such
 * text in pieces cut at line ends) or EF_ERR_NOMEM; then *ids is NULL and
 * *n_ids 0.
 */
EF_API ef_status ef_tokenizer_encode(const ef_tokenizer *tok, const void *text, size_t len,
                                     unsigned flags, int32_t **ids, size_t *n_ids);

/*
 * Decodes ids into bytes: the concatenation of each token's bytes (a special
 * token gives its text). *text is a new buffer of *len bytes plus a
 * terminating NUL (ef_free it). Fails with EF_ERR_RANGE naming the position
 * of an id outside [0, n_tokens), or EF_ERR_NOMEM; then *text is NULL.
 */
EF_API ef_status ef_tokenizer_decode(const ef_tokenizer *tok, const int32_t *ids, size_t n,
                                     char **text, size_t *len);

/*
 * End (exclusive byte offset) of the pre-token that starts at `pos` in
 * text[0..len), pos < len; always > pos. Walking pos = end until len cuts any
 * byte string into pre-tokens, exactly as GPT-2's regex does on valid UTF-8
 * (letters \p{L}, numbers \p{N} and White_Space from the Unicode 14 database;
 * unassigned code points count as "other" like punctuation). A byte that does
 * not start a valid UTF-8 sequence is one "other" character of its own.
 */
EF_API size_t ef_pretoken_end(const void *text, size_t len, size_t pos);

/* ---- the vocabulary (for GGUF export and import) --------------------------------- */

/* Number of tokens (ids are 0 .. n_tokens-1). */
EF_API size_t ef_tokenizer_n_tokens(const ef_tokenizer *tok);

/* Number of merges. */
EF_API size_t ef_tokenizer_n_merges(const ef_tokenizer *tok);

/* Number of special (control) tokens. */
EF_API size_t ef_tokenizer_n_specials(const ef_tokenizer *tok);

/* The bytes of token `id` (*len of them; for a special token its text), or
 * NULL if id is out of range. Valid while the tokenizer lives. */
EF_API const uint8_t *ef_tokenizer_token_bytes(const ef_tokenizer *tok, int32_t id, size_t *len);

/*
 * The text of token `id` as GGUF's tokenizer.ggml.tokens stores it: for a
 * normal token its bytes mapped through GPT-2's byte-to-unicode table (UTF-8;
 * a space is "Ġ", a newline "Ċ"), for a special token its text. NUL-terminated,
 * valid while the tokenizer lives; NULL if id is out of range.
 */
EF_API const char *ef_tokenizer_token_text(const ef_tokenizer *tok, int32_t id);

/* The type of token `id` (EF_TOK_NORMAL or EF_TOK_CONTROL), 0 if out of range. */
EF_API int ef_tokenizer_token_type(const ef_tokenizer *tok, int32_t id);

/* Merge i (rank i, i < n_merges) as GGUF's tokenizer.ggml.merges stores it:
 * the two token texts separated by one space, e.g. "Ġ t". NULL if i is out of
 * range. Valid while the tokenizer lives. */
EF_API const char *ef_tokenizer_merge_text(const ef_tokenizer *tok, size_t i);

/* Merge i as ids: left + right -> result. EF_ERR_RANGE if i is out of range. */
EF_API ef_status ef_tokenizer_merge(const ef_tokenizer *tok, size_t i, int32_t *left,
                                    int32_t *right, int32_t *result);

/* Id of the special token whose text is `text`, or -1. */
EF_API int32_t ef_tokenizer_special_id(const ef_tokenizer *tok, const char *text);

/* Id of EF_TOK_EOT ("<|endoftext|>"), or -1 if the tokenizer has none. */
EF_API int32_t ef_tokenizer_eot_id(const ef_tokenizer *tok);

/*
 * Builds a tokenizer from GGUF-style arrays: tokens[i] is the text of id i
 * (byte-level text for normal tokens, raw text for control tokens), types[i]
 * its type (EF_TOK_NORMAL or EF_TOK_CONTROL; types NULL: all normal), merges
 * the "A B" strings in rank order. Fed the arrays of the accessors above it
 * gives a tokenizer identical to the original (same ids, same encodings, same
 * saved file). Checks: every text valid and unique; normal texts made of
 * byte-level characters only; all 256 single bytes present; each merge names
 * two normal tokens whose concatenation is a normal token, and no pair twice;
 * control texts valid UTF-8 without NUL, at most EF_TOK_MAX_SPECIAL_LEN
 * bytes. Fails with EF_ERR_FORMAT naming the first fault (token or merge
 * index), EF_ERR_UNSUPPORTED for other token types, EF_ERR_RANGE above
 * EF_TOK_MAX_VOCAB, EF_ERR_NOMEM. The arrays are copied.
 */
EF_API ef_status ef_tokenizer_from_vocab(const char *const *tokens, const int32_t *types,
                                         size_t n_tokens, const char *const *merges,
                                         size_t n_merges, ef_tokenizer **out);

/* ---- files ------------------------------------------------------------------- */

/*
 * The tokenizer file: a JSON object
 *   {"format": "edgefl-bpe", "version": 1, "pre_tokenizer": "gpt-2",
 *    "tokens": [...], "token_types": [...], "merges": [...]}
 * holding exactly the arrays of ef_tokenizer_from_vocab (one entry per line).
 * ef_tokenizer_serialize makes the text (*out: new NUL-terminated buffer of
 * *len bytes, ef_free it); the same tokenizer always gives the same bytes.
 */
EF_API ef_status ef_tokenizer_serialize(const ef_tokenizer *tok, char **out, size_t *len);

/*
 * Parses a tokenizer file's text (len bytes). EF_ERR_FORMAT names what is
 * wrong (not JSON, wrong format or version, a missing or mistyped field, and
 * every check of ef_tokenizer_from_vocab); EF_ERR_UNSUPPORTED for another
 * pre_tokenizer or a newer version.
 */
EF_API ef_status ef_tokenizer_parse(const char *text, size_t len, ef_tokenizer **out);

/* Writes the tokenizer file atomically (temporary file, fsync, rename). */
EF_API ef_status ef_tokenizer_save(const ef_tokenizer *tok, const char *path);

/* Reads a tokenizer file (at most 512 MiB); errors name the file. */
EF_API ef_status ef_tokenizer_load(const char *path, ef_tokenizer **out);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_TOKENIZER_H */

/*
 * Internal pieces of the language model shared by src/nn/lm.c (the model)
 * and src/nn/lm_train.c (training and checkpoints): the config <->
 * safetensors metadata mapping.
 */
#ifndef EDGEFL_LM_INTERNAL_H
#define EDGEFL_LM_INTERNAL_H

#include "edgefl/io.h"
#include "edgefl/lm.h"

/* Number of metadata pairs ef__lm_config_meta writes. */
#define EF_LM_META_COUNT 10

/* Fills kv[0..EF_LM_META_COUNT) with "edgefl.lm.<field>" pairs for cfg; the
 * value strings live in bufs. Returns EF_LM_META_COUNT. */
size_t ef__lm_config_meta(const ef_lm_config *cfg, ef_st_kv *kv, char (*bufs)[32]);

/* Reads a config back from an open file's metadata ("edgefl.arch" must be
 * "llama"); EF_ERR_FORMAT naming `path` and the key at fault. */
ef_status ef__lm_config_from_meta(const ef_safetensors *st, const char *path, ef_lm_config *cfg);

#endif /* EDGEFL_LM_INTERNAL_H */

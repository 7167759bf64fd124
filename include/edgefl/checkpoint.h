/*
 * Model checkpoints: an ef_model's parameters saved as safetensors (loadable
 * by numpy and PyTorch) with the architecture recorded in the metadata, and
 * loaded back into a new model.
 */
#ifndef EDGEFL_CHECKPOINT_H
#define EDGEFL_CHECKPOINT_H

#include "edgefl/io.h"
#include "edgefl/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Writes m's parameters to `path` atomically, with metadata keys
 * "edgefl.arch", "edgefl.input" ("C,H,W"), "edgefl.classes",
 * "edgefl.version" and "format" = "pt", plus `extra` pairs.
 */
EF_API ef_status ef_model_save(ef_model *m, const char *path, const ef_st_kv *extra,
                               size_t n_extra);

/*
 * Reads the architecture of a checkpoint into *cfg (max_batch left as given).
 * Uses the edgefl metadata when present, otherwise infers it from tensor
 * names and shapes (a file written by PyTorch with our tensor names works).
 */
EF_API ef_status ef_checkpoint_config(const char *path, ef_model_config *cfg);

/*
 * Creates a model from a checkpoint: architecture from ef_checkpoint_config,
 * parameters loaded. `max_batch` sizes the activations. Errors name the
 * file and the missing or mismatched tensor.
 */
EF_API ef_status ef_model_load(ef_model **out, const char *path, int max_batch, ef_pool *pool);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_CHECKPOINT_H */

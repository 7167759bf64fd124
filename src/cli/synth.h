/*
 * The synthetic trainer of `edgefl loadgen`: an ef_trainer that does no
 * training. fit writes a delta of small Gaussian noise (stddev `noise`)
 * drawn from the task's seed and the client id -- the same task and client
 * always give the same delta, different clients independent ones -- so a
 * FedAvg of such updates stays finite and the model moves a little every
 * round. It costs one pass over the parameters (one 64-bit random number
 * per four values, read through a table of Gaussian quantiles): about a
 * millisecond for the 1.66M-parameter CNN, microseconds for small models.
 * Each client trains on a fixed number of examples (its aggregation
 * weight): `lo` for all, or drawn once per client from [lo, hi].
 */
#ifndef EDGEFL_CLI_SYNTH_H
#define EDGEFL_CLI_SYNTH_H

#include "edgefl/client.h"

typedef struct synth synth;

/*
 * A synthetic trainer: deltas of stddev `noise` (> 0, finite), clients of
 * lo..hi training examples (1 <= lo <= hi) and `eval` held-out examples,
 * examples drawn from `seed`. EF_ERR_INVALID for bad values. Free with
 * synth_free.
 */
ef_status synth_new(synth **out, double noise, uint32_t lo, uint32_t hi, uint32_t eval,
                    uint64_t seed);
void synth_free(synth *s);

/* Training examples of client `id` (what it reports in its check-in and
 * every update). */
uint32_t synth_examples(const synth *s, uint32_t id);

/* Held-out examples of every client. */
uint32_t synth_eval_examples(const synth *s);

/*
 * The callbacks (user = s; thread-safe: s is read only). fit: the delta
 * described above; n_examples synth_examples(client); steps epochs x
 * ceil(examples / batch); a training loss that falls with the model
 * version, with 5% noise. evaluate: synth_eval_examples examples with a
 * loss and an accuracy drawn from the client id (light clients hold no
 * data to evaluate on).
 */
ef_trainer synth_trainer(synth *s);

/* The delta of client `id` for a task with `seed`: n values (what fit
 * writes). */
void synth_delta(const synth *s, uint64_t seed, uint32_t id, float *out, size_t n);

#endif /* EDGEFL_CLI_SYNTH_H */

/*
 * The federated server's round engine as a pure state machine: no sockets,
 * no threads, no clock of its own. A driver (the simulator, the MQTT
 * transport) feeds it messages and the current time and sends what it puts
 * in the outbox; ef_server_next_timer says when to call ef_server_tick.
 *
 * Synchronous rounds: once min_clients clients are online, the server picks
 * ceil(clients_per_round * overselect) idle clients at random (later rounds:
 * up to that many among those online, starting as soon as the previous round
 * closes, or at the next check-in when nobody is online), sends each the
 * global model and a task. The round closes when
 * clients_per_round updates have arrived, when every selected client has
 * answered or left, or at the deadline; it aggregates if at least
 * min_updates arrived (otherwise the model stays as it was). With
 * fed_eval_every = k, every k-th round is followed by a federated
 * evaluation on fed_eval_clients clients' held-out data.
 *
 * With secure aggregation each selected client gets an SA_SETUP message
 * instead of a TASK and the round runs the four SecAgg+ stages (keys,
 * shares, masked updates, unmasking; see docs/privacy.md); a stage closes
 * when every participant still in has answered, or at its timeout (the
 * masked-update stage at the round deadline). Fewer than the threshold
 * left at any stage aborts the round: the model stays as it was.
 *
 * Asynchronous mode (FedBuff, Nguyen et al. 2022): clients_per_round
 * clients train at all times; each update is weighted by
 * (1 + staleness)^-staleness_exponent (staleness: model versions since its
 * task), updates staler than max_staleness are refused, and the model
 * changes every buffer_k accepted updates. Each change is one "round".
 */
#ifndef EDGEFL_SERVER_H
#define EDGEFL_SERVER_H

#include "edgefl/metrics.h"
#include "edgefl/params.h"
#include "edgefl/strategy.h"
#include "edgefl/wire.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ef_server_config {
    uint64_t job;                /* job id carried by every message */
    uint32_t rounds;             /* rounds (synchronous) or aggregations (asynchronous) */
    uint32_t clients_per_round;  /* updates wanted per round; async: clients training at once */
    double overselect;           /* >= 1: select this multiple of clients_per_round (sync) */
    double deadline_s;           /* round deadline (sync) / task timeout (async); 0: none */
    uint32_t min_updates;        /* fewest updates aggregated at a deadline (>= 1) */
    uint32_t min_clients;        /* online clients needed before the first round */
    int async;                   /* 0 synchronous, 1 FedBuff */
    uint32_t buffer_k;           /* async: updates per aggregation */
    uint32_t max_staleness;      /* async: older updates are refused */
    double staleness_exponent;   /* async: weight (1 + s)^-exponent, FedBuff uses 0.5 */
    uint16_t local_epochs;       /* client training settings sent in every task */
    uint16_t batch;
    float lr, momentum;
    uint32_t fed_eval_every;     /* sync: federated evaluation every k rounds; 0 never */
    uint32_t fed_eval_clients;   /* clients asked per federated evaluation */
    uint64_t seed;               /* client selection and per-task training seeds */
    size_t max_message;          /* largest payload accepted (0: model size + 1 KiB) */
    /* Secure aggregation (synchronous rounds, mean-based strategies): 0 off;
     * EF_SECAGG_PLUS: SecAgg+, the server learns only the quantized sum;
     * EF_SECAGG_PLAIN: the same clipping, weighting and quantization with no
     * masks (a baseline: the same clients give the same sum bit for bit). */
    int secagg;
    uint32_t secagg_neighbors;   /* neighbours per client; 0: 2 ceil(log2 n) (n - 1: classic) */
    uint32_t secagg_threshold;   /* shares to recover a secret; 0: a majority of k + 1 */
    int secagg_bits;             /* sums mod 2^bits, 1..32 (default 32) */
    double secagg_clip;          /* coordinates clipped to [-clip, clip] (default 1) */
    double secagg_weight_cap;    /* weight min(n_examples, cap) / cap (default 1000) */
    double secagg_stage_timeout_s; /* wait per key/share/unmask stage; 0: deadline_s or 60 */
    /* Client-level differential privacy (DP-FedAvg, McMahan et al. 2018):
     * every update is clipped to L2 norm dp_clip and counts with weight 1;
     * Gaussian noise of stddev dp_noise * dp_clip is added to their sum,
     * which is divided by clients_per_round. EF_DP_CENTRAL: the server adds
     * it; EF_DP_DISTRIBUTED (needs secure aggregation): every client adds
     * its share as integer noise before masking (dp_mechanism: Skellam or
     * discrete Gaussian), sized for secagg_threshold survivors. Privacy
     * spent is tracked by an RDP accountant (sampling rate clients selected
     * / dp_population) and reported as each round's epsilon at dp_delta;
     * with dp_target_epsilon > 0 the run stops before a round that would
     * exceed it (ef_server_stop_reason). */
    int dp;
    double dp_noise;             /* noise multiplier z */
    double dp_clip;              /* clipping norm C */
    double dp_delta;             /* delta of the reported epsilon (default 1e-5) */
    double dp_target_epsilon;    /* 0: no limit */
    uint32_t dp_population;      /* clients the sample is drawn from; 0: those checked in */
    int dp_mechanism;            /* EF_DP_SKELLAM (default) or EF_DP_DGAUSS */
    double dp_min_survivors;     /* distributed: the noise is sized for this fraction of the
                                  * round's clients (at least the threshold; default 0.8);
                                  * a round with fewer survivors is not released */
    /* Adaptive clipping (Andrew et al. 2021; central DP without secure
     * aggregation): C follows the dp_adaptive_quantile of the update norms,
     * C <- C exp(-lr (b - quantile)) with b the noised fraction of updates
     * within C (noise stddev dp_adaptive_noise, 0: clients_per_round / 20);
     * the update noise becomes (z^-2 - (2 sigma_b)^-2)^-1/2 so that both
     * queries together still spend the budget of multiplier z. */
    int dp_adaptive;
    double dp_adaptive_quantile; /* default 0.5 */
    double dp_adaptive_lr;       /* default 0.2 */
    double dp_adaptive_noise;    /* sigma_b */
    /* Simulation only: server noise from `seed`, so runs repeat exactly
     * (0: the operating system's randomness). */
    int deterministic_noise;
    /* Authentication (deployments; see docs/deploy.md). sign_key: the
     * server's Ed25519 secret key (EF_SK_BYTES, copied into locked memory):
     * every message it sends is signed. authenticate: every incoming
     * message must be signed by its sender's key on the allow-list
     * (ef_server_allow) and carry a message counter above the last one seen
     * from that sender; anything else is refused with EF_ERR_AUTH. */
    const uint8_t *sign_key;
    int authenticate;
    /* First value of the server's message counter (seq; task ids are seqs).
     * A restarted server must not reuse counters: deployments pass a
     * time-based value (e.g. microseconds since the epoch); 0 in simulation. */
    uint64_t first_seq;
    /* Audit hook (tests, audits): called when a secure-aggregation round's
     * sum is known, with the unmasked sum mod 2^bits (n_params words) and the
     * ids of the clients whose inputs it contains. NULL: none. */
    void (*sa_audit)(void *user, uint32_t round, const uint32_t *sum, size_t n, int bits,
                     const uint32_t *clients, size_t n_clients);
    void *sa_audit_user;
} ef_server_config;

#define EF_DP_OFF 0
#define EF_DP_CENTRAL 1
#define EF_DP_DISTRIBUTED 2
#define EF_DP_SKELLAM 1
#define EF_DP_DGAUSS 2

#define EF_SECAGG_OFF 0
#define EF_SECAGG_PLUS 1
#define EF_SECAGG_PLAIN 2

/* Sensible defaults: 10 clients per round, no over-selection, no deadline,
 * 1 epoch, batch 32, lr 0.05, FedBuff K = 10, staleness bound 10, 0.5. */
EF_API ef_server_config ef_server_defaults(void);

/*
 * Called when a round is final (after aggregation and, if any, federated
 * evaluation): `rec` may be annotated (e.g. centralized test accuracy) before
 * the server stores it; `model` (n floats) is the global model after the
 * round.
 */
typedef void (*ef_round_fn)(void *user, ef_round_record *rec, const float *model, size_t n);

typedef struct ef_server ef_server;

/*
 * Creates a server whose initial global model is a copy of `init` (layout and
 * values). Validates both configs. Free with ef_server_free.
 */
EF_API ef_status ef_server_new(ef_server **out, const ef_server_config *cfg,
                               const ef_strategy_config *strategy, ef_params *init,
                               ef_round_fn on_round, void *user);

/*
 * Puts client `id` with Ed25519 public key pk on the allow-list (used when
 * cfg.authenticate is set). The client is known but offline until it checks
 * in. EF_ERR_INVALID for a reserved id or an id that already has another key.
 */
EF_API ef_status ef_server_allow(ef_server *s, uint32_t id, const uint8_t pk[EF_PK_BYTES]);

/*
 * Checkpoints the server into directory `dir` (created, mode 0700, if
 * missing): the model and server-optimizer state as safetensors
 * (model-<rounds>.safetensors: "global", "strategy.m", "strategy.v") and
 * state.json (rounds done, model version, message counter, selection RNG,
 * round records, known clients and their last message counters, the DP
 * accountant and clipping norm, the hash of the model file), each written
 * atomically, state.json last. Call it after a round closes (when
 * ef_server_records grows). On failure the previous checkpoint stays valid.
 */
EF_API ef_status ef_server_checkpoint(ef_server *s, const char *dir);

/*
 * Resumes from the checkpoint in `dir`, if there is one (*restored = 1;
 * a missing state.json is a fresh run: EF_OK, *restored = 0). Call it right
 * after ef_server_new (and ef_server_allow), before any message. The run
 * continues after the last completed round: the round in progress at the
 * crash starts again with new task ids, so answers to its old tasks are
 * refused (stale task) and no update is aggregated twice; the clients known
 * are taken as online. A checkpoint of another job, model size or strategy,
 * or whose model file does not match its hash, is refused (EF_ERR_FORMAT)
 * and the server is unchanged.
 */
EF_API ef_status ef_server_restore(ef_server *s, const char *dir, int *restored);

/*
 * Registers scale-out aggregator worker `id` (public key pk; NULL allowed
 * only without cfg.authenticate). Workers share the server inbox (an MQTT 5
 * shared subscription), batch the clients' updates whose tasks they saw the
 * server send, and send PARTIAL messages: the example-weighted mean of the
 * batch and one entry per client (id, examples, task id, message counter).
 * The server checks every entry against its open tasks (and counters) and
 * adds the partial with the batch's total weight; any entry that does not
 * answer an open task of the current round refuses the whole partial.
 * Partials need synchronous rounds with a mean-based strategy and neither
 * secure aggregation nor DP (EF_ERR_UNSUPPORTED otherwise). A worker id is
 * never selected as a client. See include/edgefl/worker.h.
 */
EF_API ef_status ef_server_add_aggregator(ef_server *s, uint32_t id, const uint8_t *pk);

/* Frees the server. NULL is a no-op. */
EF_API void ef_server_free(ef_server *s);

/*
 * Handles one incoming message at time `now` (seconds, non-decreasing).
 * Replies go to `out`. A malformed, foreign, unexpected or stale message is
 * refused: the return status says why (ef_last_error has the detail) and the
 * model does not change. A refusal can still move the protocol on (an
 * asynchronous server replaces the refused client's task; a refused update
 * that was a round's last outstanding answer closes the round), so drivers
 * send `out` whatever the status. Fails on valid input only with EF_ERR_NOMEM.
 */
EF_API ef_status ef_server_handle(ef_server *s, double now, const uint8_t *msg, size_t len,
                                  ef_outbox *out);

/* Runs what is due at `now`: starts rounds, closes rounds at their deadline,
 * times out tasks. Call it whenever now reaches ef_server_next_timer. */
EF_API ef_status ef_server_tick(ef_server *s, double now, ef_outbox *out);

/* Time of the next deadline the server waits for, or INFINITY. */
EF_API double ef_server_next_timer(const ef_server *s);

/* True when all rounds are done. */
EF_API int ef_server_done(const ef_server *s);

/* The global model (n_params floats, owned by the server) and its version
 * (number of aggregations applied). */
EF_API const float *ef_server_model(const ef_server *s, size_t *n_params);
EF_API uint32_t ef_server_version(const ef_server *s);

/* Rounds finished so far (owned by the server). */
EF_API const ef_round_record *ef_server_records(const ef_server *s, size_t *n);

/* Clients checked in (online or not). */
EF_API size_t ef_server_clients(const ef_server *s);

/* Messages refused since creation. */
EF_API uint64_t ef_server_refused(const ef_server *s);

/* Why the run ended before its last round (the privacy budget), or "". */
EF_API const char *ef_server_stop_reason(const ef_server *s);

/* Differential privacy spent so far: epsilon at cfg.dp_delta (0 before the
 * first noised round; NaN without DP). */
EF_API double ef_server_epsilon(const ef_server *s);

#ifdef __cplusplus
}
#endif

#endif /* EDGEFL_SERVER_H */

/*
 * The server round engine's state, shared by server.c and server_state.c
 * (checkpoints). Private to src/fl.
 */
#ifndef EDGEFL_SERVER_INTERNAL_H
#define EDGEFL_SERVER_INTERNAL_H

#include "edgefl/accountant.h"
#include "edgefl/rng.h"
#include "edgefl/server.h"
#include "fl_internal.h"
#include "privacy/dp_internal.h"
#include "privacy/secagg_internal.h"

typedef enum cstate { C_OFFLINE = 0, C_IDLE, C_TRAINING, C_EVALUATING } cstate;

typedef struct client_rec {
    uint32_t id;
    uint32_t n_train, n_eval;
    uint8_t state;
    uint32_t task_round;    /* round (sync) of the current task */
    uint32_t task_version;  /* model version of the current task */
    double task_deadline;   /* async: when the task times out */
    uint32_t sa_index;      /* secure aggregation: participant index in its round */
    uint64_t task_id;       /* seq of the TASK, SA_SETUP or EVAL message of its current task */
    uint64_t last_seq;      /* authentication: highest message counter seen from it */
    uint8_t has_pk;         /* on the allow-list */
    uint8_t aggregator;     /* a scale-out aggregator worker (sends PARTIAL), not a client */
    uint8_t pk[EF_PK_BYTES];
} client_rec;

typedef enum phase { P_WAIT = 0, P_TRAIN, P_EVAL, P_DONE, P_SA } phase;

/* A secure-aggregation round in progress. */
typedef struct sa_round {
    ef_sa_server *srv;  /* the SecAgg+ server machine (masks off in EF_SECAGG_PLAIN) */
    ef_sa_params p;
    ef__quant q;
    int stage;          /* 1 keys, 2 shares, 3 masked updates, 4 unmasking */
    uint32_t *part;     /* (n) client index of participant i */
    uint8_t *heard;     /* (n) answered the current stage */
    uint8_t *gone;      /* (n) left or restarted: will not answer again */
    double *ratio;      /* (n) weight of participant i's update */
    uint32_t waiting;   /* participants still in that have not answered this stage */
    uint32_t *words;    /* (d) aligned copy of a masked update */
    uint32_t dp_kind;   /* distributed DP: 1 Skellam, 2 discrete Gaussian; 0 none */
    double dp_param;    /* ... each client's mu or sigma in quantized units */
    uint32_t dp_min;    /* ... sized for this many survivors: fewer are not released */
} sa_round;

struct ef_server {
    ef_server_config cfg;
    ef_strategy *strat;
    float prox_mu;
    size_t n_params;
    float *model;
    uint32_t version;
    uint8_t hash[EF_HASH_BYTES];
    ef_buf *model_buf;      /* MODEL message of the current version, or NULL */
    client_rec *clients;
    size_t n_clients, cap_clients;
    ef__idmap ids;          /* client id -> index in clients */
    uint32_t *pick;         /* selection scratch (cap_clients) */
    uint64_t *order;        /* selection scratch: (id, index) keys sorted by id */
    uint8_t *sk;            /* the server's signing key (secure memory), or NULL */
    ef_rng rng;
    uint64_t seq;
    phase ph;
    uint32_t round;         /* current round (1-based) */
    ef_round_record rec;
    double deadline;
    double loss_sum, loss_w;
    uint64_t ev_n, ev_correct;
    double ev_loss;
    uint32_t ev_pending;
    uint32_t training;      /* async: clients with a task */
    uint32_t spent;         /* sync: tasks answered by a refused update this round */
    double st_sum;
    uint64_t refused;
    ef_round_record *records;
    size_t n_records, cap_records;
    ef_round_fn on_round;
    void *user;
    sa_round sa;
    /* differential privacy */
    ef_accountant *acct;    /* privacy spent; NULL without DP */
    double *dp_sum;         /* central DP without secure aggregation: sum of clipped updates */
    uint32_t dp_count;      /* ... and how many */
    double dp_q;            /* sampling rate of the current round */
    ef__drbg dp_rng;        /* the server's noise */
    ef__dp_adaptive adapt;  /* adaptive clipping; adapt.clip is the current C */
    double dp_stddev;       /* noise on the sum: z C, or z_delta C when adaptive */
    double dp_zdelta;       /* the update's noise multiplier */
    uint32_t dp_below;      /* updates within C this round */
    double *norms;          /* the round's update norms (for the record's median) */
    size_t n_norms, cap_norms;
    char stop_reason[200];
    ef_rng rng_at_close;    /* the selection RNG as the last round closed (checkpoints) */
};

/* Adds client `id` to the registry (state C_OFFLINE). */
ef_status ef__server_add_client(ef_server *s, uint32_t id, client_rec **out);
/* The registry entry of client `id`, or NULL. */
client_rec *ef__server_find_client(ef_server *s, uint32_t id);

#endif /* EDGEFL_SERVER_INTERNAL_H */

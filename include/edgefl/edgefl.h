/*
 * edgefl: real-time, privacy-preserving federated learning and small
 * language models for edge devices. Umbrella header: includes every public
 * edgefl header.
 */
#ifndef EDGEFL_EDGEFL_H
#define EDGEFL_EDGEFL_H

#include "edgefl/core.h"
#include "edgefl/arena.h"
#include "edgefl/rng.h"
#include "edgefl/pool.h"
#include "edgefl/params.h"
#include "edgefl/nn.h"
#include "edgefl/optim.h"
#include "edgefl/model.h"
#include "edgefl/data.h"
#include "edgefl/train.h"
#include "edgefl/io.h"
#include "edgefl/checkpoint.h"
#include "edgefl/partition.h"
#include "edgefl/strategy.h"
#include "edgefl/wire.h"
#include "edgefl/metrics.h"
#include "edgefl/server.h"
#include "edgefl/client.h"
#include "edgefl/sim.h"
#include "edgefl/accountant.h"
#include "edgefl/identity.h"
#include "edgefl/worker.h"
#include "edgefl/gateway.h"
#include "edgefl/serve.h"
#include "edgefl/transport.h"
#include "edgefl/gguf.h"
#include "edgefl/quant.h"
#include "edgefl/tokenizer.h"
#include "edgefl/corpus.h"
#include "edgefl/lm.h"
#include "edgefl/slm.h"

#endif /* EDGEFL_EDGEFL_H */

#!/usr/bin/env bash
# Installs the llama.cpp peer that edgefl's GGUF compatibility test and the
# generation benchmark compare against: the npm package node-llama-cpp, which
# ships prebuilt llama.cpp binaries, pinned to one version, with only the
# x86-64 CPU binaries (no CUDA/Vulkan variants: 85 MB instead of 725 MB) and
# without install scripts (the prebuilt binaries need none).
#
#   scripts/install-llamacpp-peer.sh [DIR]     install into DIR (default
#                                              $EDGEFL_LLAMACPP_DIR, else
#                                              ~/.cache/edgefl/llamacpp-peer)
# Prints DIR on stdout. Idempotent: nothing is downloaded when DIR already
# holds this version. Exit status 77 when node or npm is missing (the tests
# that need the peer then skip), 1 when the install fails.
set -euo pipefail
VERSION=3.22.1
dir=${1:-${EDGEFL_LLAMACPP_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/edgefl/llamacpp-peer}}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install-llamacpp-peer: node and npm are needed (Debian: nodejs, npm)" >&2
    exit 77
fi
stamp=$dir/.edgefl-node-llama-cpp-$VERSION
if [ ! -f "$stamp" ]; then
    mkdir -p "$dir"
    [ -f "$dir/package.json" ] ||
        echo '{"name": "edgefl-llamacpp-peer", "private": true}' > "$dir/package.json"
    echo "install-llamacpp-peer: installing node-llama-cpp $VERSION into $dir" >&2
    if ! (cd "$dir" && npm install --omit=optional --ignore-scripts --no-audit --no-fund \
            "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION" >&2); then
        echo "install-llamacpp-peer: npm install failed" >&2
        exit 1
    fi
    touch "$stamp"
fi
echo "$dir"

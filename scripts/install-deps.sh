#!/usr/bin/env bash
# Installs the Debian 12 packages that edgefl's build, tests, demo and
# benchmarks need. Idempotent: packages already installed are skipped, and
# nothing is downloaded when everything is present.
#
#   scripts/install-deps.sh            install what is missing (uses sudo if not root)
#   scripts/install-deps.sh --check    only list what is missing; exit 1 if anything is
set -euo pipefail

PACKAGES=(
    # build
    gcc make cmake pkg-config
    libopenblas-dev libcjson-dev libsodium-dev zlib1g-dev
    # data: Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist
    dataset-fashion-mnist
    # reference checks and peer benchmarks (PyTorch, numpy), /usr/bin/time
    python3 python3-numpy python3-torch time
    # live dashboard (HTTP server) and its browser test
    libmicrohttpd-dev chromium nodejs
    # deploy/mosquitto: broker, mosquitto_pub/_sub for tests/deploy, test certificates
    mosquitto mosquitto-clients openssl
    # MQTT transport: the client library (the tests and examples start the broker above)
    libmosquitto-dev
    # tests/transport/test_workers.sh: signs forged updates (Ed25519) as an attacker would
    python3-cryptography
    # small language models: the King James Bible corpus (`bible`, edgefl corpus kjv) and
    # GPT-2's regex engine for the tokenizer's reference test (tests/data/test_bpe.c)
    bible-kjv python3-regex
    # tests/slm: the AVX-512 inference kernels are tested through SIMDe's portable intrinsics
    libsimde-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=("$p")
done
# npm installs the llama.cpp peer of tests/slm (scripts/install-llamacpp-peer.sh).
# Debian's nodejs ships without it (package npm); NodeSource's nodejs includes it.
if ! command -v npm >/dev/null 2>&1; then
    status=$(dpkg-query -W -f='${Status}' npm 2>/dev/null || true)
    [ "$status" = "install ok installed" ] || missing+=(npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi
echo "install-deps: missing: ${missing[*]}"
if [ "${1:-}" = "--check" ]; then
    exit 1
fi

SUDO=
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        echo "install-deps: not root and no sudo; install the packages above as root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} packages"

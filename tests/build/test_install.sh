#!/usr/bin/env bash
# `make install` and the pkg-config file: installs the build into a temporary
# prefix, compiles examples/train_logreg.c against it with
# `pkg-config --cflags --libs edgefl` (shared library) and with --static, and
# runs both binaries on the real dataset.
# usage: test_install.sh EDGEFL_BINARY SOURCE_DIR
set -eu
EF=$1 SRC=$2
BUILD=$(dirname "$EF")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$BUILD" --prefix "$tmp/prefix" >/dev/null
for f in bin/edgefl include/edgefl/edgefl.h include/edgefl/nn.h lib/libedgefl.a lib/pkgconfig/edgefl.pc; do
    [ -e "$tmp/prefix/$f" ] || { echo "FAIL: $f not installed" >&2; exit 1; }
done
ls "$tmp/prefix"/lib/libedgefl.so* >/dev/null || { echo "FAIL: no shared library" >&2; exit 1; }
export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig
# a sanitizer build's library needs the sanitizer runtimes linked in too
SAN=
grep -q '^EDGEFL_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" && SAN="-fsanitize=address,undefined"
[ "$(pkg-config --modversion edgefl)" = "$("$EF" --version | cut -d' ' -f2)" ] ||
    { echo "FAIL: pkg-config version differs from edgefl --version" >&2; exit 1; }
cc -std=c11 -Wall -Werror $SAN "$SRC/examples/train_logreg.c" $(pkg-config --cflags --libs edgefl) \
    -o "$tmp/ex_shared"
cc -std=c11 -Wall -Werror $SAN "$SRC/examples/train_logreg.c" $(pkg-config --cflags edgefl) \
    "$tmp/prefix/lib/libedgefl.a" $(pkg-config --libs --static edgefl | sed 's/-ledgefl//') \
    -o "$tmp/ex_static"
# only the documented API is exported from the shared library
if nm -D --defined-only "$tmp/prefix"/lib/libedgefl.so | awk '{print $3}' | grep -v '^ef_' | grep -q .; then
    echo "FAIL: shared library exports non-ef_ symbols:" >&2
    nm -D --defined-only "$tmp/prefix"/lib/libedgefl.so | awk '{print $3}' | grep -v '^ef_' | head >&2
    exit 1
fi
if [ -d /usr/share/datasets/fashion-mnist ]; then
    LD_LIBRARY_PATH=$tmp/prefix/lib "$tmp/ex_shared" "" "$tmp/m.safetensors" | grep -q 'test accuracy 0\.[7-9]'
    "$tmp/ex_static" | grep -q 'test accuracy 0\.[7-9]'
    "$tmp/prefix/bin/edgefl" eval --model-file "$tmp/m.safetensors" --json | grep -q '"model":"logreg"'
fi
echo "build/test_install: installed tree, pkg-config, shared and static linking work"

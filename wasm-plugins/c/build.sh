#!/bin/sh
# Builds the C logger: build.sh OUT_DIR -> OUT_DIR/kvs_c_logger.wasm
# Needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (compiler-rt
# builtins for wasm32), or any clang with a wasm32-wasi sysroot (set CLANG, SYSROOT).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out"
${CLANG:-clang} --target=wasm32-wasi ${SYSROOT:+--sysroot="$SYSROOT"} \
    -mexec-model=reactor -O2 -Wall -Wextra -Werror -std=c11 -D_GNU_SOURCE \
    -Wl,--strip-all \
    -o "$out/kvs_c_logger.wasm" "$here/logger.c"

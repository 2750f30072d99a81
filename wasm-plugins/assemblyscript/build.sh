#!/bin/sh
# Builds the AssemblyScript frontend: build.sh OUT_DIR [NODE_PREFIX]
#   -> OUT_DIR/kvs_as_rest.wasm
# NODE_PREFIX is a folder holding node_modules/assemblyscript (the pinned version in
# package.json, installed with `npm install --prefix NODE_PREFIX assemblyscript@VERSION`);
# by default this folder's own node_modules. Nothing is installed here.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: build.sh OUT_DIR [NODE_PREFIX]}
prefix=${2:-$here}
asc="$prefix/node_modules/assemblyscript/bin/asc.js"
[ -f "$asc" ] || { echo "build.sh: $asc is missing: npm install --prefix $prefix assemblyscript (see package.json)" >&2; exit 1; }
mkdir -p "$out"
cd "$here"
# --use abort=...: AssemblyScript otherwise imports env.abort, which kvs does not provide.
node "$asc" assembly/index.ts --outFile "$out/kvs_as_rest.wasm" \
    --optimize --runtime incremental --noAssert --use abort=assembly/kvs/trap

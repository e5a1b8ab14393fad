#!/usr/bin/env bash
# Issue 14: the GPU part of the scaling grid, parts side by side on one GPU (small models leave it idle
# between dispatches); each part's JSON grows point by point and /tmp/s is tarred every 10 s, so a
# time limit keeps what was measured. Merge here with `patchflow bench scaling --merge`.
# Here, from the repo root: bundle the CLI (see gpu_run.sh), write patchflow's corpus:english to a
# file and `xz` it to .device-build/corpus/english.txt.xz, then
#   ../shared/device/pack.sh .device-build node_modules/webgpu tools/device
# Device (carry [".device"]):  bash .device/app/tools/device/scaling_gpu_run.sh
set -uo pipefail
source .device/setup.sh
cd .device/app
export XDG_RUNTIME_DIR=/tmp
nvidia-smi --query-gpu=name,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
xz -dc .device-build/corpus/english.txt.xz > /tmp/english.txt
mkdir -p /tmp/s && cp .device-build/corpus/bpe-4096-*.json /tmp/s/ 2>/dev/null  # optional: the BPE otherwise trains in seconds
S4="patch K=2 λ=1/2,patch K=4 λ=2/3,block 75%,sparse→dense 75% (last 20% dense)"
job() { local name=$1; shift; (timeout 540 node .device-build/patchflow.mjs bench scaling --backend webgpu --data /tmp/english.txt "$@" --out /tmp/s/$name.json > /tmp/s/$name.txt 2>&1; echo "rc=$? $(date +%T)" >> /tmp/s/$name.txt) & }
date +%T > /tmp/s/start.txt
job a5 --sizes "4L d256" --tokenizers bytes --budgets 1000000,4000000,16000000 --plans "$S4"
job a6 --sizes "8L d512" --tokenizers bytes --budgets 1000000,4000000 --plans "patch K=2 λ=1/2,patch K=4 λ=2/3,block 75%"
job a1 --sizes "2L d128" --tokenizers bytes --budgets 64000000 --plans "patch K=4 λ=2/3,block 75%,sparse→dense 75% (last 20% dense)"
job a2 --sizes "2L d128" --tokenizers bytes --budgets 1000000,4000000,16000000 --plans "patch K=2 λ=2/3,patch K=4 λ=1/2,block 87.5%"
job a3 --sizes "2L d128" --tokenizers 4096 --budgets 1000000,4000000,16000000 --plans "$S4"
job a4 --sizes "2L d128" --tokenizers 4096 --budgets 64000000 --plans "patch K=2 λ=1/2,block 75%"
(while sleep 10; do tar -C /tmp -cf $OUT/s.tar.tmp s && mv $OUT/s.tar.tmp $OUT/s.tar; done) &
copier=$!
wait $(jobs -p | grep -v "^$copier$") 2>/dev/null
sleep 1; kill $copier; tar -C /tmp -cf $OUT/s.tar s
tail -n 2 /tmp/s/*.txt

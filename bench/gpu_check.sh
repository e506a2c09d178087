#!/usr/bin/env bash
# The one prepared script for a lent GPU (an H200 with torch and triton, no Ray, DeepSpeed or
# network; the working tree is copied, so nothing else is needed). Every part writes JSON
# under $OUT and has its own time limit, so a failing part never stops the rest and the
# whole run stays under 8 minutes:
#   run(command="bash bench/gpu_check.sh", timeout_s=540)
#   1. check.json      the three Triton ops against the PyTorch reference, forward and backward,
#                      fp32 and bf16, at Llama-7B and SmolLM2-135M shapes (exit 1 on a failure)
#   2. kernels_*.json  forward/backward/full time vs eager and torch.compile, TFLOP/s and % of a
#                      plain torch.matmul of the same size (bench/kernel_speed.py), bf16 then fp32
#   3. step.json       training-step time of a from-config SmolLM2-shaped model with each method,
#                      fused kernels vs torch (bench/gpu_step.py; recorded as an error if
#                      transformers is missing there)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1
{ nvidia-smi; python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/machine.txt" 2>&1
part() {  # part NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/parts.txt"
}
part check 90 python bench/kernel_speed.py --check --out "$OUT/check.json"
part kernels_bf16 150 python bench/kernel_speed.py --dtype bf16 --out "$OUT/kernels_bf16.json"
part kernels_fp32 90 python bench/kernel_speed.py --dtype fp32 --quick --out "$OUT/kernels_fp32.json"
part step 120 python bench/gpu_step.py --out "$OUT/step.json"
tail -n 40 "$OUT"/check.log "$OUT"/step.log

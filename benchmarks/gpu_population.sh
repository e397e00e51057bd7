#!/usr/bin/env bash
# Evaluations per hour on one GPU: 2,000-step basic_cnn evaluations (the paper's MNIST
# setting: batch 100, 5,000 validation images), K = 1..32 candidates per step, XLA off
# and on, sequential and batched side by side (benchmarks/population.py). About 10 minutes
# at most: each XLA setting is cut off after $LIMIT_S seconds (rows printed so far stay).
#
#   bash benchmarks/gpu_population.sh [OUT_DIR]      # default OUT_DIR: $OUT or ./gpu-population
#
# Writes OUT_DIR/nvidia-smi.txt (the card), OUT_DIR/xla-{off,on}.{json,log}.
# Target on an H100/H200-class card: >= 1,800 evaluations per hour (<= 2 s each).
set -u
OUT_DIR=${1:-${OUT:-gpu-population}}
LIMIT_S=${LIMIT_S:-270}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT_DIR"
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH=${PYTHONPATH:-$PWD}
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1 || echo "nvidia-smi failed" >> "$OUT_DIR/nvidia-smi.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT_DIR/nvidia-smi.txt" 2>&1
for xla in off on; do
  timeout "$LIMIT_S" "$PYTHON" benchmarks/population.py --models basic_cnn --k 1,2,4,8,16,32 \
    --steps 2000 --val 5000 --jit "$xla" --sequential-max 2 --json "$OUT_DIR/xla-$xla.json" \
    > "$OUT_DIR/xla-$xla.log" 2>&1
  echo "XLA $xla: exit $?" >> "$OUT_DIR/xla-$xla.log"
  grep -E '^\{' "$OUT_DIR/xla-$xla.log" | "$PYTHON" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(f"XLA {r[\"xla\"]} K={r[\"k\"]:>2}: sequential {r[\"sequential_per_hour\"]:7.0f}/h, "
          f"batched {r[\"batched_per_hour\"]:7.0f}/h, device peak {r[\"device_peak_mb_per_candidate\"]} MB/candidate")'
done

#!/usr/bin/env bash
# The fast path on one GPU, side by side with the reference-style loop, in one run (about 5 minutes):
# resnet32x4 -> resnet8x4 KD, batch 64, every default CUDA configuration (fp32 eager reference; device loader;
# channels_last; compile; bf16; the teacher-logit cache), 200 timed steps each in 5 interleaved rounds.
# Writes benchmarks/gpu-<device>.md with the exact command in its first line.
#   bash scripts/gpu_bench.sh            (WORKERS=8 for a reference loader with more worker processes)
set -euo pipefail
name=$(python -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-').lower())")
kdbench-bench --device cuda --steps "${STEPS:-200}" --rounds 5 --warmup "${WARMUP:-20}" \
  --workers "${WORKERS:-2}" --cache-images "${CACHE_IMAGES:-2048}" --out "benchmarks/gpu-${name}.md"

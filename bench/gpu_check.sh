#!/usr/bin/env bash
# Everything a GPU session checks and times, in one go (at most 8 files under $OUT). From the project root here:
#   bash ../shared/gpu-kit/prepare.sh
# then with the device tool (carry .gpukit):   bash .gpukit/run.sh bash bench/gpu_check.sh
# 1. the GPU-relevant tests (precision, Reptile and MetaDistil steps, pipeline) with CUDA visible
# 2. bench/step_cost.py at 128 tokens, batch 32, bf16 (more rounds than on CPU: GPU steps are short)
# 3. the second round's grid at the preset (8-epoch schedule, patience 2, students from the teacher's layers) on
#    MRPC and STS-B: teachers, then the student alone, vanilla KD, ReptileDistil and MetaDistil (3 seeds on MRPC,
#    1 on STS-B), 8 students at once, bf16 -> results/minilm-gpu/ (tagged: another device, another precision).
#    At most about 550 s: one device call; every finished run is written, so a cut grid still returns its runs.
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())" >> "$OUT/nvidia-smi.txt" 2>&1
if python -c "import pytest" 2>/dev/null; then
  timeout 90 python -m pytest -q -p no:cacheprovider tests/test_precision.py tests/test_reptile.py tests/test_metadistil.py tests/test_pipeline.py \
    > "$OUT/tests.txt" 2>&1
else echo "pytest is not installed on this machine: tests skipped" > "$OUT/tests.txt"; fi
timeout 60 python bench/step_cost.py --seq 128 --steps 10 --rounds 3 > "$OUT/step_cost.txt" 2>&1
cp "$(ls -t bench/results/step_cost-*.json | head -1)" "$OUT/step_cost.json" 2>/dev/null
GPU="trainer=gpu trainer.precision=bf16-mixed"
timeout 400 python bench/reproduce.py --tasks mrpc stsb --jobs 8 --results-tag gpu --teacher-override trainer=gpu \
  --teacher-override trainer.precision=bf16-mixed -- $GPU >> "$OUT/grid.txt" 2>&1
tar czf "$OUT/results-gpu.tgz" results/minilm-gpu 2>/dev/null
echo done

#!/usr/bin/env bash
# Everything a GPU session checks and times, in one go (at most 8 files under $OUT). From the project root here:
#   bash ../shared/gpu-kit/prepare.sh
# then with the device tool (carry .gpukit):   bash .gpukit/run.sh bash bench/gpu_check.sh
# 1. the GPU-relevant tests (precision, Reptile and MetaDistil steps, pipeline) with CUDA visible
# 2. bench/step_cost.py at 128 tokens, batch 32, bf16 (more rounds than on CPU: GPU steps are short)
# 3. the MRPC grid: teacher, then finetune/kd/reptile/metadistil x 3 seeds, 12 students in parallel
#    -> results/minilm-gpu/ (metadistil on CUDA: its second-order step needs the math attention kernel)
set -u
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())" >> "$OUT/nvidia-smi.txt" 2>&1
if python -c "import pytest" 2>/dev/null; then
  timeout 240 python -m pytest -q -p no:cacheprovider tests/test_precision.py tests/test_reptile.py tests/test_metadistil.py tests/test_pipeline.py \
    > "$OUT/tests.txt" 2>&1
else echo "pytest is not installed on this machine: tests skipped" > "$OUT/tests.txt"; fi
timeout 200 python bench/step_cost.py --seq 128 --steps 10 --rounds 5 > "$OUT/step_cost.txt" 2>&1
cp "$(ls -t bench/results/step_cost-*.json | head -1)" "$OUT/step_cost.json" 2>/dev/null
timeout 300 python bench/reproduce.py --results-tag gpu --tasks mrpc --seeds 1 2 3 --jobs 12 -- trainer=gpu \
  > "$OUT/grid.txt" 2>&1
tar czf "$OUT/results-minilm-gpu.tgz" results/minilm-gpu 2>/dev/null
echo done

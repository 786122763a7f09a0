#!/usr/bin/env bash
# Everything a GPU session checks and times, in one go (at most 8 files under $OUT). From the project root here:
#   bash ../shared/gpu-kit/prepare.sh
# then with the device tool (carry .gpukit):   bash .gpukit/run.sh bash bench/gpu_check.sh
# 1. the GPU-relevant tests (precision, Reptile and MetaDistil steps, pipeline) with CUDA visible
# 2. bench/step_cost.py at 128 tokens, batch 32, bf16 (more rounds than on CPU: GPU steps are short)
# 3. the second round (results/minilm-ep8*, on the CPU): MRPC and STS-B teachers, then KD and ReptileDistil on an
#    8-epoch schedule stopping once dev has not improved for 2 epochs, from both starts (pretrained, teacher),
#    students in parallel, bf16 -> results/minilm-gpu-ep8/ and results/minilm-gpu-ep8-tinit/
#    (tagged: another device, another precision). At most about 560 s: one device call.
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
# The GPU grid fine-tunes its own teachers (bf16 on a GPU is another experiment), then lends them to the tinit grid.
GPU="trainer=gpu trainer.precision=bf16-mixed"; EP="model.distil.epochs=8 model.distil.patience=2"
G="python bench/reproduce.py --tasks mrpc stsb --seeds 1 --methods kd reptile --jobs 4"
timeout 250 $G --results-tag gpu-ep8 --teacher-override trainer=gpu --teacher-override trainer.precision=bf16-mixed \
  -- $GPU $EP >> "$OUT/grid.txt" 2>&1
timeout 150 $G --results-tag gpu-ep8-tinit --reuse-teachers gpu-ep8 -- $GPU $EP model.student.start=teacher >> "$OUT/grid.txt" 2>&1
tar czf "$OUT/results-gpu.tgz" results/minilm-gpu-ep8* 2>/dev/null
echo done

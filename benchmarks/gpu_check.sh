#!/usr/bin/env bash
# One prepared run on a lent CUDA machine (bare, offline, its own python3 with CUDA torch), in under 8 minutes:
#   1. the CUDA parity subset (tests/test_cuda.py: Hiera-B, MAE-B, SAM 2.1-T image, mask generation and video, ours
#      on the GPU vs Meta's on the GPU in fp32 with TF32 off; the bf16/fp16 mask-IoU rows, memory offload, training
#      prompts from a CPU generator);
#   2. bench_hiera.py: Hiera-B fp32 / bf16 eager vs Meta, transformers and timm (torch.compile rows last: step 5);
#   3. bench_hiera_mae.py: the MAE training step (bf16 autocast, B=128) vs Meta, transformers and hiera-optim;
#   4. bench_sam2_video.py: SAM 2.1-T frames/s at 1 and 4 objects (fp32, bf16) vs Meta's predictor, and GPU memory
#      after 50 and 200 tracked frames;
#   5. bench_hiera.py again, bf16 with torch.compile rows (ours and Meta compiled).
# Each step has its own time limit (they add up to 8 minutes) and keeps its log, so one slow step loses only itself.
# It writes one Markdown report, $OUT/gpu_report.md (the tail of each step's log under it), and each full log.
# Prepare first, here: `bash benchmarks/gpu_prepare.sh`; then run with the device tool, carrying `.gpu`:
#   bash benchmarks/gpu_check.sh
# A dry run of the CPU-safe parts on any machine: `GPU_CHECK_DEVICE=cpu GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
device=${GPU_CHECK_DEVICE:-cuda}
dry=${GPU_CHECK_DRY:-0}
py=${PYTHON:-python3}
mkdir -p "$out"
report="$out/gpu_report.md"
if [ -d .gpu/whl ] && [ "$dry" = 0 ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
        || { echo "installing the carried wheels failed"; exit 1; }
    export PYTHONPATH="$PWD/src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HIERA_HF_DEVICE="$device"
frames=.gpu/frames
[ -d "$frames" ] || frames=../shared/media/blocks.mp4
[ -d .gpu/media ] && export HIERA_HF_MEDIA="$PWD/.gpu/media"  # test_cuda.py's images and frames (no PyAV there)

{
    echo "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ))"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$py" -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__)"
    echo '```'
} > "$report"

# step NAME SECONDS COMMAND...: runs with a time limit, keeps the whole log, appends its tail to the report.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    { echo; echo "## $name (exit $rc, $((SECONDS - start)) s)"; echo; tail -n 30 "$out/$name.log"; } >> "$report"
    echo "$name: exit $rc in $((SECONDS - start)) s"
}

if [ "$dry" = 1 ]; then
    step parity 420 "$py" -m pytest -q tests/test_cuda.py -p no:cacheprovider
    step hiera 120 "$py" benchmarks/bench_hiera.py --quick --quiet --device "$device"
    step mae 120 "$py" benchmarks/bench_hiera_mae.py --preset mae_hiera_tiny_224 --batch 1 --rounds 1 --no_progress --device "$device"
    step video 180 "$py" benchmarks/bench_sam2_video.py --quick --video "$frames" --device "$device"
else
    # Eager figures (the bars) first; the compile rows, whose first calls cost the most, last.
    step parity 150 "$py" -m pytest -q tests/test_cuda.py -p no:cacheprovider
    step hiera 50 "$py" benchmarks/bench_hiera.py --models base --batch-sizes 64 --dtypes fp32,bf16 --no-compile \
        --repeats 10 --quiet --device "$device"
    step mae 60 "$py" benchmarks/bench_hiera_mae.py --preset mae_hiera_base_224 --batch 128 --dtype bf16 --rounds 10 \
        --no_progress --device "$device"
    step video 130 "$py" benchmarks/bench_sam2_video.py --video "$frames" --frames 32 --objects 1 4 --repeats 2 \
        --memory-frames 50 --memory-size 1024 --device "$device"
    step hiera_compile 90 "$py" benchmarks/bench_hiera.py --models base --batch-sizes 64 --dtypes bf16 --compile \
        --repeats 10 --quiet --device "$device"
fi
echo "report: $report"

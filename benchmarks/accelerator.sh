#!/usr/bin/env bash
# The accelerator run: every measurement jaxcl wants from a lent GPU (or TPU), in one go, < 8 minutes.
#
#   bash benchmarks/accelerator.sh                 # on the accelerator: JSON under benchmarks/results/
#   bash benchmarks/accelerator.sh --dry-run       # this CPU, tiny sizes, into a temporary folder
#   bash benchmarks/accelerator.sh --out-dir DIR   # somewhere else
#
# Stages (each under its own time limit; a failed or timed-out stage is recorded and the next runs):
#   1. step_vs_pytorch: jaxcl's SimCLR step against the same step in PyTorch, float32 and bfloat16
#      (PyTorch runs on the GPU only where its build has CUDA; each JSON records where it ran).
#   2. loss_scaling: loss + gradient memory and time as the batch doubles, to the largest that fits.
#   3. plan_accuracy: `jaxcl plan`'s compiled estimate against the device's measured peak.
#   4. the default job: `jaxcl train --config configs/simclr_digits.py`, its results.json.
# Files: <stage>_<device>.json (the device's name from JAX, e.g. nvidia_h100_80gb_hbm3), and
# accelerator_<device>.json with each stage's status and wall time.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run|--cpu) DRY=1 ;;
    --out-dir) OUT="$2"; shift ;;
    *) echo "accelerator.sh: unknown argument $1 (use --dry-run, --out-dir DIR)" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python}"

if [ "$DRY" = 1 ]; then
  export JAX_PLATFORMS=cpu
  OUT="${OUT:-$(mktemp -d /tmp/jaxcl_accelerator_dry.XXXXXX)}"
else
  OUT="${OUT:-$ROOT/benchmarks/results}"
  export XLA_PYTHON_CLIENT_PREALLOCATE=false  # memory stats must see each stage's own peak
fi
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/jaxcl_accelerator_work.XXXXXX)"

# The device's name and memory (GiB), from JAX itself.
read -r DEVICE MEM_GB < <("$PY" - <<'EOF'
import re
import jax
d = jax.devices()[0]
stats = d.memory_stats() if d.platform != "cpu" else None
mem = (stats or {}).get("bytes_limit", 4 * 2**30) / 2**30
print(re.sub(r"[^a-z0-9]+", "_", d.device_kind.lower()).strip("_") or d.platform, f"{mem:.1f}")
EOF
)
echo "accelerator.sh: device $DEVICE (${MEM_GB} GiB), results in $OUT" >&2
SUMMARY="$OUT/accelerator_${DEVICE}.json"
STAGES=()

stage() {  # stage NAME LIMIT_S COMMAND...: run it, record its status and wall time
  local name="$1" limit="$2"; shift 2
  local start end code
  echo "== $name (limit ${limit}s): $*" >&2
  start=$(date +%s)
  timeout --signal=TERM --kill-after=10 "$limit" "$@"
  code=$?
  end=$(date +%s)
  STAGES+=("{\"stage\": \"$name\", \"exit_code\": $code, \"seconds\": $((end - start)), \"timed_out\": $([ $code = 124 ] && echo true || echo false)}")
  echo "== $name: exit $code after $((end - start))s" >&2
}

if [ "$DRY" = 1 ]; then
  stage step_vs_pytorch_f32 240 "$PY" benchmarks/step_vs_pytorch.py --configs small_cnn --reps 1 \
    --steps 1 --batch 16 --out "$OUT/step_vs_pytorch_${DEVICE}_float32.json"
  stage step_vs_pytorch_bf16 240 "$PY" benchmarks/step_vs_pytorch.py --configs small_cnn --reps 1 \
    --steps 1 --batch 16 --dtype bfloat16 --out "$OUT/step_vs_pytorch_${DEVICE}_bfloat16.json"
  stage loss_scaling 240 "$PY" benchmarks/loss_scaling.py --devices 2 --min-n 256 --max-n 512 --d 32 \
    --runs 1 --reps 1 --block-size 64 --methods allgather,ring --out "$OUT/loss_scaling_${DEVICE}"
  stage plan_accuracy 300 "$PY" benchmarks/plan_accuracy.py --config configs/simclr_digits.py:smoke \
    --devices 2 --modes allgather --batches 16 --out "$OUT/plan_accuracy_${DEVICE}.json"
  stage default_job 300 "$PY" -m jaxcl train --config configs/simclr_digits.py:smoke \
    --workdir "$WORK/default_job"
else
  # ~1.5 min: two encoders, both dtypes.
  stage step_vs_pytorch_f32 60 "$PY" benchmarks/step_vs_pytorch.py --configs small_cnn,resnet18 \
    --reps 3 --steps 5 --out "$OUT/step_vs_pytorch_${DEVICE}_float32.json"
  stage step_vs_pytorch_bf16 60 "$PY" benchmarks/step_vs_pytorch.py --configs small_cnn,resnet18 \
    --reps 3 --steps 5 --dtype bfloat16 --out "$OUT/step_vs_pytorch_${DEVICE}_bfloat16.json"
  # ~2.5 min: N = 16k .. 1M on one device, bfloat16, until the compiled memory exceeds the device's.
  stage loss_scaling 150 "$PY" benchmarks/loss_scaling.py --devices 1 --min-n 16384 --max-n 1048576 \
    --d 512 --dtype bfloat16 --runs 1 --reps 2 --block-size 1024 --methods naive,ring \
    --limit-gb "$MEM_GB" --run-limit-gb "$MEM_GB" --max-run-s 20 --out "$OUT/loss_scaling_${DEVICE}"
  # ~1.5 min: three modes at two batches of SimCLR / ResNet-18 on 32 px images.
  stage plan_accuracy 90 "$PY" benchmarks/plan_accuracy.py --config configs/simclr_cifar10.py \
    --platform gpu --devices 1 --modes allgather,ring,grad_cache --batches 512,2048 \
    --block_size 256 --timeout_s 80 --out "$OUT/plan_accuracy_${DEVICE}.json"
  # ~2 min: the default job as a user runs it.
  stage default_job 120 "$PY" -m jaxcl train --config configs/simclr_digits.py \
    --workdir "$WORK/default_job"
fi

if [ -f "$WORK/default_job/results.json" ]; then
  cp "$WORK/default_job/results.json" "$OUT/default_job_${DEVICE}.json"
fi
{
  echo "{\"device\": \"$DEVICE\", \"memory_gib\": $MEM_GB, \"dry_run\": $([ $DRY = 1 ] && echo true || echo false),"
  echo " \"stages\": ["
  for i in "${!STAGES[@]}"; do
    echo "  ${STAGES[$i]}$([ $i -lt $((${#STAGES[@]} - 1)) ] && echo ,)"
  done
  echo " ]}"
} > "$SUMMARY"
rm -rf "$WORK"
echo "accelerator.sh: summary in $SUMMARY" >&2
failed=$(grep -c '"exit_code": [1-9]' "$SUMMARY")
exit $(( failed > 0 ))

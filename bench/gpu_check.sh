#!/usr/bin/env bash
# The one command to run on a GPU machine (through the device tool), from the repository root:
#   bash bench/gpu_check.sh
# Builds the extension against that machine's torch, then runs verify, the `gpu` tests and the
# benchmarks, writing logs and JSON under $OUT (default: bench/results/latest). It keeps going
# after a failing step so one call brings back everything, and exits non-zero if any step failed.
# Each step has a time limit so that the whole run fits one 10-minute device call (a step cut
# short logs rc=124); commit what comes back under bench/results/<date>-<device>/.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/results/latest}"
mkdir -p "$OUT"
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s"; tail -n 5 "$OUT/$name.log"
  echo "$name $rc $((SECONDS - t0))" >> "$OUT/steps.txt"
  [ "$rc" -eq 0 ] || status=1
}

export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"

python - > "$OUT/environment.json" <<'PY'
import json, platform, subprocess, torch
try:
    import triton; triton_version = triton.__version__
except ImportError:
    triton_version = None
commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
print(json.dumps({
    "device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton_version,
    "python": platform.python_version(), "commit": commit or None, "dirty": dirty,
}, indent=2))
PY
cat "$OUT/environment.json"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

# Time limits (s): 180 + 20 + 40 + 100 + 50 + 70 + 55 + 40 + 35 = 590, one 10-minute call.
step build 180 python setup.py build_ext --inplace
step info 20 python -m mprnet_kernels.cli info
step verify 40 python -m mprnet_kernels.cli verify --fixture tests/data/mprnet_small_float64.pt
step gpu_tests 100 python -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml"
# Memory errors in the CUDA C++ and Triton kernels: one small forward+backward of every op and
# backend (what `verify` runs), under compute-sanitizer where the machine has it.
sanitizer=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
if [ -x "$sanitizer" ]; then
  step memcheck 50 "$sanitizer" --tool memcheck --error-exitcode 1 python -m mprnet_kernels.cli verify
fi
# The quick run: every op (ours, eager, compile), inference 1x3x256x256 and a training step
# 16x3x256x256 (bf16 autocast) of both models, with peak memory; PNG plots beside the JSON.
step bench_cli 70 python -m mprnet_kernels.cli bench --no-progress --json "$OUT/bench_cli.json" --plot "$OUT/plots"
# GPU figures only (CPU ones are measured on the CPU machines): the deblur preset in float32 and
# bf16 (ops: about 110 cases; the model: inference 256 and 512 of ours and the reference, and
# their training step 16x3x256x256 under bf16 autocast: in float32 the reference's needs about
# 80 GiB). MPRNET_BENCH_ALL=1: every preset, float16 and float32 training too (minutes).
# Compiling takes tens of seconds per op case and minutes per model variant:
# MPRNET_BENCH_COMPILE=1 includes those. Ops and model are two steps, so that one cut short
# keeps the other's JSON.
select="cuda and deblur and not fp16 and not (training_step and fp32)"
[ "${MPRNET_BENCH_ALL:-0}" = 1 ] && select="cuda"
[ "${MPRNET_BENCH_COMPILE:-0}" = 1 ] || select="$select and not compile"
step bench_ops 55 python -m pytest bench/ops -q -p no:cacheprovider --benchmark-only -k "$select" \
  --benchmark-json="$OUT/benchmarks_ops.json"
step bench_model 40 python -m pytest bench/model -q -p no:cacheprovider --benchmark-only -k "$select" \
  --benchmark-json="$OUT/benchmarks_model.json"
# Where the time goes: convolutions vs everything else in one training step (16x3x256x256, bf16
# autocast) and one inference of the fast model and the reference (the goal: everything else
# under 10% of the step).
step profile 35 python bench/profile_model.py --device cuda --json "$OUT/profile.json"
exit $status

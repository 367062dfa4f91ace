#!/usr/bin/env bash
# What to run on a GPU machine (through the device tool), from the repository root:
#   bash bench/gpu_check.sh check    build, info, verify, the `gpu` tests, compute-sanitizer
#   bash bench/gpu_check.sh bench    build (a no-op when warm), benchmarks, profile, synccheck
#   bash bench/gpu_check.sh          both in one 10-minute device call, with shorter limits
# Each step's limit reads PART:ALL seconds: the first when one part runs (each part fits a
# 10-minute call, and a session's 15 minutes of device time hold both: `check` first, correctness
# before speed), the second when both run in one call (the sum fits 10 minutes; a step cut short
# logs rc=124 and the run goes on). Logs and JSON go under $OUT (default:
# bench/results/latest). It keeps going after a failing step so one call brings back everything,
# and exits non-zero if any step failed. Each step has a time limit (a step cut short logs
# rc=124); commit what comes back under bench/results/<date>-<device>/.
set -u
cd "$(dirname "$0")/.."
part="${1:-all}"
case "$part" in check|bench|all) ;; *) echo "usage: bash bench/gpu_check.sh [check|bench|all]" >&2; exit 2;; esac
OUT="${OUT:-bench/results/latest}"
mkdir -p "$OUT"
status=0
step() {  # step NAME PART:ALL COMMAND...: run with a time limit, log to $OUT/NAME.log, remember failures
  local name=$1 limit=${2%%:*}
  [ "$part" = all ] && limit=${2##*:}
  shift 2
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

sanitizer=$(command -v compute-sanitizer || echo "$CUDA_HOME/bin/compute-sanitizer")
# Every loss kernel path of the CUDA C++ backend (several strips, row chunks and output groups,
# float64, clamp, no edge term) for the shared-memory race and barrier checkers.
loss_run="import torch, mprnet_kernels.ops as o; [o.set_cuda_backend(n, 'cuda') for n in ('edge_loss', 'mprnet_loss')]; g = torch.Generator('cuda').manual_seed(0); y = torch.rand(2, 3, 70, 150, device='cuda', generator=g); outs = [torch.rand(2, 3, 70, 150, device='cuda', generator=g) * 1.2 - 0.1 for _ in range(4)]; L = torch.ops.mprnet; L.edge_loss(outs[0], y, 1e-3, True); L.edge_loss(outs[0], y, 1e-3, False); L.mprnet_loss(outs, y, 1e-3, 0.05, True, True, True); L.mprnet_loss(outs[:3], y, 1e-3, 0.05, False, False, False); L.mprnet_loss(outs, y, 1e-3, 0.0, True, True, True); L.mprnet_loss([t.double() for t in outs], y.double(), 1e-3, 0.05, True, True, True); torch.cuda.synchronize()"

check_steps() {  # limits (s): 180 + 15 + 40 + 240 + 50 + 60 = 585 alone; in `all`, 150 + 10 + 30 + 120 + 35 + 30 = 375
  step build 180:150 python setup.py build_ext --inplace
  step info 15:10 python -m mprnet_kernels.cli info
  step verify 40:30 python -m mprnet_kernels.cli verify --fixture tests/data/mprnet_small_float64.pt
  step gpu_tests 240:120 python -m pytest -m gpu -q -p no:cacheprovider --junitxml="$OUT/gpu_tests.xml"
  # Memory errors in the CUDA C++ and Triton kernels: one small forward+backward of every op and
  # backend (what `verify` runs); then shared-memory races in the tiled loss kernels.
  if [ -x "$sanitizer" ]; then
    step memcheck 50:35 "$sanitizer" --tool memcheck --error-exitcode 1 python -m mprnet_kernels.cli verify
    step racecheck_losses 60:30 "$sanitizer" --tool racecheck --error-exitcode 1 python -c "$loss_run"
  fi
}

bench_steps() {  # limits (s): 60 + 90 + 120 + 90 + 60 + 60 = 480 alone; in `all`, 5 + 60 + 45 + 35 + 35 + 30 = 210
  step build_bench 60:5 python setup.py build_ext --inplace
  # The quick run: every op (ours, eager, compile), inference 1x3x256x256 and a training step
  # 16x3x256x256 (bf16 autocast) of both models, with peak memory; PNG plots beside the JSON.
  step bench_cli 90:60 python -m mprnet_kernels.cli bench --no-progress --json "$OUT/bench_cli.json" --plot "$OUT/plots"
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
  step bench_ops 120:45 python -m pytest bench/ops -q -p no:cacheprovider --benchmark-only -k "$select" \
    --benchmark-json="$OUT/benchmarks_ops.json"
  step bench_model 90:35 python -m pytest bench/model -q -p no:cacheprovider --benchmark-only -k "$select" \
    --benchmark-json="$OUT/benchmarks_model.json"
  # Where the time goes: convolutions vs everything else in one training step (16x3x256x256, bf16
  # autocast) and one inference of the fast model and the reference (the goal: everything else
  # under 10% of the step).
  step profile 60:35 python bench/profile_model.py --device cuda --json "$OUT/profile.json"
  if [ -x "$sanitizer" ]; then
    step synccheck_losses 60:30 "$sanitizer" --tool synccheck --error-exitcode 1 python -c "$loss_run"
  fi
}

[ "$part" = bench ] || check_steps
[ "$part" = check ] || bench_steps
exit $status

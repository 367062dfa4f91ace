#!/usr/bin/env bash
# The GPU machine's work, in two device calls made one right after the other (the machine stays
# warm 30 s, so the second finds the first's build and Triton cache), from the repository root:
#   bash bench/gpu_check.sh check    build (sm_90), info, verify, the core `gpu` tests,
#                                    compute-sanitizer memcheck and racecheck
#   bash bench/gpu_check.sh bench    build (a no-op when warm), the other `gpu` tests, the
#                                    benchmarks, the profile, synccheck
# The core `gpu` tests hold every pair of parameter values of each test (tests/gpu_parts.py), so
# every kernel specialisation runs in the first call; the second runs the other cases.
#
# Budget: 15 minutes of device time per session, the machine's start (1-2 minutes) included.
# Each step has a time limit; the limits of a part add up to 400 s (check) and 360 s (bench),
# 12.7 minutes together (tests/test_bench_suite.py holds them to that). A step cut short logs
# rc=124 and the part goes on with the next step.
#
# Logs go to build/gpu_check/<part>/; after every step they are packed into
# $OUT/gpu_check-<part>.tar.gz (the device call returns at most 8 files), so a call cut short
# still brings back every finished step. $OUT/steps-<part>.txt lists the steps (name, rc,
# seconds). Commit what comes back under bench/results/<date>-<device>/. Exits non-zero if a
# step failed. Written for the GPU machine: python3 with torch, pytest, ninja and no network.
set -u
cd "$(dirname "$0")/.."
part="${1:-}"
case "$part" in check|bench) ;; *) echo "usage: bash bench/gpu_check.sh check|bench" >&2; exit 2;; esac
OUT="${OUT:-bench/results/latest}"
logs="build/gpu_check/$part"
rm -rf "$logs"
mkdir -p "$OUT" "$logs"
: > "$OUT/steps-$part.txt"
status=0
pack() { tar -czf "$OUT/gpu_check-$part.tar.gz" -C "$logs" . 2>/dev/null; }
step() {  # step NAME LIMIT COMMAND...: run with a time limit, log to $logs/NAME.log, remember failures
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit} s)"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$logs/$name.log" 2>&1
  local rc=$?
  echo "   rc=$rc in $((SECONDS - t0)) s"
  tail -n 4 "$logs/$name.log" | cut -c1-300
  echo "$name $rc $((SECONDS - t0))" >> "$OUT/steps-$part.txt"
  cp "$OUT/steps-$part.txt" "$logs/steps.txt"
  [ "$rc" -eq 0 ] || status=1
  pack
}

# Hopper only (the H200 is sm_90): half the device code of the default "8.0;9.0". The build finds
# nvcc itself (build_support/cuda.py); 16 cores.
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-16}"
export PYTHONUNBUFFERED=1
# One Triton cache in the checkout, so the second call (and compute-sanitizer's runs) reuse the
# kernels the first compiled.
export TRITON_CACHE_DIR="$PWD/build/triton-cache"

python3 - > "$logs/environment.json" <<'PY'
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
cat "$logs/environment.json"
nvidia-smi > "$logs/nvidia-smi.txt" 2>&1

# pytest-xdist (on the GPU machine's image) spreads the tests' Triton and Inductor compiles over
# the cores; without it they run in one process.
workers=()
python3 -c "import xdist" 2>/dev/null && workers=(-n 8)
gpu_tests=(python3 -m pytest -m gpu -q -p no:cacheprovider "${workers[@]}" -o junit_family=xunit2)

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
# Every loss kernel path of the CUDA C++ backend (several strips, row chunks and output groups,
# float64, clamp, no edge term) for the shared-memory race and barrier checkers.
loss_run="import torch, mprnet_kernels.ops as o; [o.set_cuda_backend(n, 'cuda') for n in ('edge_loss', 'mprnet_loss')]; g = torch.Generator('cuda').manual_seed(0); y = torch.rand(2, 3, 70, 150, device='cuda', generator=g); outs = [torch.rand(2, 3, 70, 150, device='cuda', generator=g) * 1.2 - 0.1 for _ in range(4)]; L = torch.ops.mprnet; L.edge_loss(outs[0], y, 1e-3, True); L.edge_loss(outs[0], y, 1e-3, False); L.mprnet_loss(outs, y, 1e-3, 0.05, True, True, True); L.mprnet_loss(outs[:3], y, 1e-3, 0.05, False, False, False); L.mprnet_loss(outs, y, 1e-3, 0.0, True, True, True); L.mprnet_loss([t.double() for t in outs], y.double(), 1e-3, 0.05, True, True, True); torch.cuda.synchronize()"

check_steps() {  # limits: 150 + 10 + 45 + 120 + 45 + 30 = 400 s
  step build 150 python3 setup.py build_ext --inplace
  step info 10 python3 -m mprnet_kernels.cli info
  step verify 45 python3 -m mprnet_kernels.cli verify --fixture tests/data/mprnet_small_float64.pt
  step gpu_tests_core 120 "${gpu_tests[@]}" --gpu-part core --junitxml="$logs/gpu_tests_core.xml"
  # Memory errors in the CUDA C++ and Triton kernels: one small forward+backward of every op and
  # backend (what `verify` runs); then shared-memory races in the tiled loss kernels.
  step memcheck 45 "$sanitizer" --tool memcheck --error-exitcode 1 python3 -m mprnet_kernels.cli verify
  step racecheck_losses 30 "$sanitizer" --tool racecheck --error-exitcode 1 python3 -c "$loss_run"
}

bench_steps() {  # limits: 60 + 90 + 90 + 50 + 45 + 25 = 360 s
  step build 60 python3 setup.py build_ext --inplace
  step gpu_tests_rest 90 "${gpu_tests[@]}" --gpu-part rest --junitxml="$logs/gpu_tests_rest.xml"
  # The quick run: every op (ours, eager, compile), inference 1x3x256x256 and a training step
  # 16x3x256x256 (bf16 autocast) of both models, with peak memory; PNG plots beside the JSON.
  step bench_cli 90 python3 -m mprnet_kernels.cli bench --no-progress --json "$logs/bench_cli.json" --plot "$logs/plots"
  # GPU figures only: the deblur preset in float32 and bf16 (ops: about 110 cases), without
  # torch.compile (tens of seconds per case; bench_cli has the compiled rows). MPRNET_BENCH_ALL=1:
  # every preset and float16 too.
  select="cuda and deblur and not fp16 and not (training_step and fp32) and not compile"
  [ "${MPRNET_BENCH_ALL:-0}" = 1 ] && select="cuda and not compile"
  step bench_ops 50 python3 -m pytest bench/ops -q -p no:cacheprovider --benchmark-only -k "$select" \
    --benchmark-json="$logs/benchmarks_ops.json"
  # Where the time goes: convolutions vs everything else in one training step (16x3x256x256, bf16
  # autocast) and one inference of the fast model and the reference (the goal: everything else
  # under 10% of the step).
  step profile 45 python3 bench/profile_model.py --device cuda --json "$logs/profile.json"
  step synccheck_losses 25 "$sanitizer" --tool synccheck --error-exitcode 1 python3 -c "$loss_run"
}

"${part}_steps"
echo "== steps ($part): name rc seconds"
cat "$OUT/steps-$part.txt"
exit $status

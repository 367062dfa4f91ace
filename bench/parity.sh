#!/usr/bin/env bash
# The GPU machine's software, checked on this CPU machine before a GPU window is spent on it:
# torch 2.11.0 and triton 3.6.0 (what the H200 machine has; here the README installs torch
# 2.14.1 and triton 3.8) in a venv of their own, then
#   1. the extension built against torch 2.11 (CPU and CUDA kernels, as on the GPU machine),
#   2. `mprnet-kernels verify --fixture`,
#   3. bench/gpu_static.py --check with triton 3.6 (every Triton kernel through its compiler),
#   4. the CPU tests,
# and a short summary. Run it whenever kernel code changes.
#
# numpy: triton 3.6's interpreter fails with numpy 2.4 ("only 0-dimensional arrays can be
# converted to Python scalars", in a range() over a tensor bound), which touches only the
# interpreter tests (the GPU machine runs Triton compiled, not interpreted), so the venv pins
# numpy < 2.4.
#
#   bash bench/parity.sh            venv and build under build/parity/ (PARITY_DIR to move it)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir="${PARITY_DIR:-$root/build/parity}"
mkdir -p "$dir"
log="$dir/logs"
mkdir -p "$log"
: > "$log/summary.txt"
status=0
note() { echo "$*" | tee -a "$log/summary.txt"; }
step() {  # step NAME COMMAND...: run in the parity tree, log to $log/NAME.log
  local name=$1
  shift
  local t0=$SECONDS
  (cd "$dir/src" && "$@") > "$log/$name.log" 2>&1
  local rc=$?
  note "$name: rc=$rc in $((SECONDS - t0)) s; $(grep -E 'passed|failed|problem|all checks|over tolerance|error' "$log/$name.log" | tail -n 1)"
  [ "$rc" -eq 0 ] || status=1
}

if [ ! -x "$dir/venv/bin/python" ]; then
  python3 -m venv "$dir/venv"
fi
. "$dir/venv/bin/activate"
python -m pip install -q torch==2.11.0 triton==3.6.0 "numpy<2.4" pybind11 ninja setuptools wheel \
  pytest pytest-benchmark torchmetrics matplotlib pillow tqdm > "$log/pip.log" 2>&1 \
  || { cat "$log/pip.log"; exit 1; }
note "$(python -c 'import torch, triton, numpy, sys; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, numpy {numpy.__version__}")')"

# A copy of the working tree (tracked and untracked files git does not ignore), so that the
# build against torch 2.11 leaves the checkout's own extension alone.
rm -rf "$dir/src"
mkdir -p "$dir/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$dir/src" 2>/dev/null

step build python -m pip install --no-build-isolation --no-deps -e .
step verify mprnet-kernels verify --fixture tests/data/mprnet_small_float64.pt
step static python bench/gpu_static.py --check --out "$log/static-sm90"
step clamp_convention python -m pytest -q -rP tests/test_reference_losses.py -k clamp
step tests python -m pytest -q -p no:cacheprovider
note "torch's clamp at the bounds: $(grep -o 'clamp: .*' "$log/clamp_convention.log" | head -n 1)"
echo "== summary (logs in $log)"
cat "$log/summary.txt"
exit $status

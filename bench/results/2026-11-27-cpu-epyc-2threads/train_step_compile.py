"""The training-step rows of `mprnet-kernels bench --full --compile --ops model --presets deblur`
alone (float32, or bf16 autocast with the argument bf16): eager reference, torch.compile of it,
ours, ours + torch.compile, one run. `PYTHONPATH=. python bench/results/2026-11-27-cpu-epyc-2threads/train_step_compile.py [bf16]`."""
import json, sys, torch
from mprnet_kernels import benchmark as mk
cfg = mk.BenchConfig(device="cpu", full=True, compile=True, ops=["model"], presets=["deblur"], compile_model=True, progress=False)
sizes = cfg.resolved_sizes()
dtype = torch.bfloat16 if "bf16" in sys.argv else torch.float32
row = mk._train_row("deblur", sizes.train_batch, sizes.train_image, dtype, cfg, sizes)
d = {k: getattr(row, k) for k in ("eager_ms", "compile_ms", "ours_ms", "ours_compile_ms")}
d.update(errors=row.errors, peak=row.peak_mib, note=row.note, ok=row.ok, dtype=str(dtype))
print(json.dumps(d, indent=1))

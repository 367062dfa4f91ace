"""The three restoration tasks and the loss each is trained with (docs/MPRNET.md, "Losses"):
the lowest layer of the package that knows about tasks, so that data, training, restoration and
the benchmarks all read the same table.
"""

from typing import Dict

TASKS = ("deblur", "derain", "denoise")

#: MPRNetLoss arguments per task: Charbonnier + 0.05 edge for deblurring and deraining;
#: Charbonnier alone on outputs clamped to [0, 1] for denoising.
TASK_LOSSES: Dict[str, dict] = {
    "deblur": {"edge_weight": 0.05, "clamp": False},
    "derain": {"edge_weight": 0.05, "clamp": False},
    "denoise": {"edge_weight": 0.0, "clamp": True},
}

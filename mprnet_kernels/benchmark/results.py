"""One row of a `bench` table: an op case or a model case, its times, errors and notes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

__all__ = ["IMPLS", "Row", "format_ms"]

def format_ms(v: Optional[float]) -> str:
    """A time in ms as tables, notes and plots show it."""
    return "-" if v is None else (f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 100 else f"{v:.0f}")


#: Implementations in the order tables and plots show them.
IMPLS = ("ours", "eager", "compile", "ours_compile")


@dataclass
class Row:
    kind: str                    # "op" or "model"
    name: str                    # op name, "mprnet_inference" or "mprnet_training_step"
    preset: str
    shape: List[int]
    device: str
    dtype: str
    backend: str                 # "cpu", "triton" or "cuda" (ours); "-" for the model
    ours_ms: Optional[float] = None
    eager_ms: Optional[float] = None
    compile_ms: Optional[float] = None
    bytes_moved: Optional[int] = None
    gb_per_s: Optional[float] = None
    pct_of_copy: Optional[float] = None
    errors: Dict[str, float] = field(default_factory=dict)  # impl -> worst rel. error vs float64
    ok: bool = True
    note: str = ""
    # Ops: "forward+backward" or "forward"; models: "inference" or "training step" (forward,
    # MPRNetLoss, backward, Adam step).
    mode: str = "forward+backward"
    ours_compile_ms: Optional[float] = None  # models: torch.compile of the fast MPRNet
    peak_mib: Dict[str, float] = field(default_factory=dict)  # models: impl -> peak_memory in MiB
    # Local-attention inference rows: the fast model with global attention, same input (what local costs).
    ours_global_ms: Optional[float] = None
    train_size: Optional[int] = None  # local-attention rows: set_local_attention's train_size

    @property
    def speedup(self) -> Optional[float]:
        if self.ours_ms and self.eager_ms:
            return self.eager_ms / self.ours_ms
        return None



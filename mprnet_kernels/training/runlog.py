"""RUN/log.csv: one row per epoch (epoch, lr, train loss, val PSNR, val SSIM, seconds).

On resume the rows of epochs after the checkpoint (written by the interrupted run after its
last save) are dropped, so the log of a resumed run reads like that of an uninterrupted one.
Empty cells: no validation that epoch.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional

COLUMNS = ("epoch", "lr", "train_loss", "val_psnr", "val_ssim", "seconds")


def read_log(path) -> List[Dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class RunLog:
    def __init__(self, path, keep_through_epoch: Optional[int] = None):
        """Starts the file afresh, or with keep_through_epoch keeps the rows up to that epoch."""
        self.path = Path(path)
        rows = []
        if keep_through_epoch is not None and self.path.is_file():
            rows = [r for r in read_log(self.path) if r.get("epoch", "").isdigit()
                    and int(r["epoch"]) <= keep_through_epoch]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)

    def append(self, epoch: int, lr: float, train_loss: float, val_psnr: Optional[float],
               val_ssim: Optional[float], seconds: float) -> None:
        row = {"epoch": epoch, "lr": f"{lr:.6g}", "train_loss": f"{train_loss:.6f}",
               "val_psnr": "" if val_psnr is None else f"{val_psnr:.4f}",
               "val_ssim": "" if val_ssim is None else f"{val_ssim:.5f}", "seconds": f"{seconds:.2f}"}
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow(row)

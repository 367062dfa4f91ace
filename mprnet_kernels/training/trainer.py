"""The training run: model, optimizer, schedule, loaders, the epoch loop, validation, logs and
checkpoints, single-process or DDP.

Kept as one function with hooks (`loss_fn`, `on_step`) rather than a class hierarchy: the tests
swap the loss for the reference one and inject an interruption mid-epoch through them, and the
CLI only builds a TrainConfig and calls train().
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Subset

from .config import TrainConfig, describe
from .data import TrainPatches, ValImages, find_pairs
from .distributed import Dist, all_reduce_sum, cleanup, setup
from .errors import SetupError
from ..metrics import validation_ssim
from .recipe import ADAM_BETAS, ADAM_EPS
from .runlog import RunLog
from .sampler import EpochSampler
from .schedule import WarmupCosine
from .state import load_weights, make_checkpoint, read_checkpoint, read_weights, restore, save_atomic
from .validation import validate


@dataclass
class TrainResult:
    """What a run did, for callers and tests (rank 0's view; step_losses are this process's)."""

    model: torch.nn.Module
    first_epoch: int  # 0-based epoch the run started at (after a resume, the checkpoint's)
    epochs: int
    step_losses: List[float] = field(default_factory=list)
    rows: List[Dict[str, Any]] = field(default_factory=list)
    input_psnr: Optional[float] = None
    best_psnr: float = float("-inf")
    best_epoch: int = 0


def default_workers(device: torch.device) -> int:
    """On CUDA, loader workers keep the GPU fed (up to 8 per process, sharing the cores among
    the processes on this node); on CPU the model needs the cores and reading a patch is cheap
    next to a training step, so load in the main process."""
    if device.type != "cuda":
        return 0
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return max(1, min(8, (os.cpu_count() or 1) // max(1, local)))


def _progress(loader, d: Dist, config: TrainConfig, epoch: int):
    if not (d.is_main and config.progress):
        return loader
    from tqdm import tqdm

    return tqdm(loader, total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", file=sys.stderr,
                leave=False, dynamic_ncols=True, mininterval=1.0)


def train(config: TrainConfig, *, checkpoint: Optional[Dict[str, Any]] = None,
          weights: Optional[Dict[str, Any]] = None, loss_fn: Optional[Callable] = None,
          on_step: Optional[Callable[[int, int, torch.Tensor], None]] = None) -> TrainResult:
    """Run training as `config` says; under torchrun, every process calls this.

    checkpoint: the resume checkpoint already read (the CLI reads it for its saved arguments);
    else read from config.resume when that is set. weights: likewise the --init checkpoint (else
    read from config.init), of which only the weights are used. loss_fn(outputs, target):
    replaces the fused MPRNetLoss (tests pass the reference one). on_step(epoch, step, loss):
    called after each optimizer step (tests raise from it to interrupt a run)."""
    d = setup(config.device)
    finished = False
    try:
        result = _train(config, d, checkpoint, weights, loss_fn, on_step)
        finished = True
        return result
    finally:
        cleanup(d, finished)


def _train(config, d: Dist, checkpoint, weights, loss_fn, on_step) -> TrainResult:
    from ..model import MPRNet
    from ..nn import MPRNetLoss

    say = (lambda *a: print(*a, flush=True)) if d.is_main else (lambda *a: None)
    cuda = d.device.type == "cuda"
    amp = cuda if config.amp is None else config.amp
    workers = default_workers(d.device) if config.workers is None else config.workers

    # Everything that can be wrong is checked before the first step.
    if config.batch % d.world:
        raise SetupError(f"--batch {config.batch}: the batch is global (summed over processes) and "
                         f"must be a multiple of the number of processes, {d.world}")
    if (checkpoint is not None or config.resume) and (weights is not None or config.init):
        raise SetupError("--init and --resume: give one; --resume continues a run, --init starts a fresh "
                         "one from a checkpoint's weights")
    train_pairs = find_pairs(config.train_dir, "--train-dir", min_size=config.patch, report=say, data=config.data)
    val_pairs = find_pairs(config.val_dir, "--val-dir", report=say, data=config.data)
    out = Path(config.out)
    if checkpoint is None and config.resume:
        checkpoint = read_checkpoint(config.resume)
    if weights is None and config.init:
        weights = read_weights(config.init)
    if checkpoint is None and (out / "last.pth").exists() and not config.overwrite:
        raise SetupError(f"--out {out}: holds last.pth of an earlier run; pass --resume to continue it "
                         "or --overwrite to start afresh")
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if checkpoint is None and (out / "best.pth").exists():
            (out / "best.pth").unlink()  # an earlier run's best must not pass for this run's

    torch.manual_seed(config.seed)
    model = MPRNet(**config.model).to(d.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
    scheduler = WarmupCosine(optimizer, config.lr, config.min_lr, config.warmup_epochs, config.epochs)
    start, best_psnr, best_epoch = 0, float("-inf"), 0
    if checkpoint is not None:
        resumed = restore(checkpoint, model, optimizer, scheduler, config.resume or "checkpoint")
        start, best_psnr, best_epoch = resumed["epoch"], resumed["best_psnr"], resumed["best_epoch"]
    elif weights is not None:
        # Fine-tuning: the weights alone; its epoch, optimizer and best PSNR were another run's.
        init_epoch = load_weights(weights, model, config.init or "checkpoint").get("epoch")
    if loss_fn is None:
        loss_fn = MPRNetLoss(edge_weight=config.edge_weight, clamp=config.clamp)

    net = model
    if d.active:
        # MPRNet has no buffers, so DDP's buffer broadcast (and its deprecated switch) is moot.
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device] if cuda else None)
    if config.compile:
        net = torch.compile(net)

    sampler = EpochSampler(len(train_pairs), config.batch, d.rank, d.world, config.seed, config.max_steps)
    loader = DataLoader(TrainPatches(train_pairs, config.patch), batch_size=config.batch // d.world,
                        sampler=sampler, num_workers=workers, pin_memory=cuda, persistent_workers=workers > 0)
    val_set = ValImages(val_pairs)
    val_loader = DataLoader(Subset(val_set, range(d.rank, len(val_set), d.world)), batch_size=1,
                            num_workers=min(workers, 4), pin_memory=cuda)

    say(describe(config, d.world, str(d.device), amp, workers))
    say(f"data: {len(train_pairs)} training pairs ({sampler.steps} steps per epoch), "
        f"{len(val_pairs)} validation images")
    result = TrainResult(model=model, first_epoch=start, epochs=config.epochs,
                         best_psnr=best_psnr, best_epoch=best_epoch)
    if start >= config.epochs:
        # Said before scoring the inputs: no epoch will run, so reading the validation set is
        # wasted. Upstream's release files land here (their epoch is their run's last).
        say(f"nothing to do: the checkpoint is at epoch {start} of --epochs {config.epochs}; raise "
            f"--epochs to train on, or fine-tune its weights from epoch 0 with a fresh optimizer and "
            f"schedule: --init {config.resume or 'CHECKPOINT'} (and a new --out) instead of --resume")
        return result
    result.input_psnr, _ = validate(model, val_loader, d, amp, None, baseline=True)
    say(f"validation PSNR of the inputs themselves: {result.input_psnr:.2f} dB")
    if weights is not None:
        was = f" (saved at its epoch {init_epoch})" if isinstance(init_epoch, int) else ""
        say(f"fine-tuning the weights of {config.init}{was} from epoch 0")
    if start:
        best = (f"best PSNR so far {best_psnr:.2f} dB at epoch {best_epoch}" if math.isfinite(best_psnr)
                else "no validation PSNR recorded in the checkpoint")
        say(f"resuming after epoch {start} ({best})")
    log = RunLog(out / "log.csv", keep_through_epoch=start if checkpoint is not None else None) \
        if d.is_main else None

    for epoch in range(start, config.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        losses = []
        bar = _progress(loader, d, config, epoch)
        for step, (inp, tgt) in enumerate(bar):
            inp = inp.to(d.device, non_blocking=True)
            tgt = tgt.to(d.device, non_blocking=True)
            if cuda:
                inp = inp.contiguous(memory_format=torch.channels_last)
                tgt = tgt.contiguous(memory_format=torch.channels_last)
            with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
                outputs = net(inp)
            loss = loss_fn(outputs, tgt)  # outside autocast: the losses promote bf16 to float32
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            if on_step is not None:
                on_step(epoch, step, loss)
            if bar is not loader and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if bar is not loader:
            bar.close()
        step_losses = torch.stack(losses).double().cpu()
        result.step_losses += step_losses.tolist()
        total = all_reduce_sum(torch.tensor([float(step_losses.sum()), len(losses)], dtype=torch.float64), d)
        train_loss = float(total[0] / total[1])
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch + 1}: the training loss is {train_loss}; "
                                     "lower --lr or check the data")
        scheduler.step()

        val_psnr = val_ssim = None
        done = epoch + 1
        if done % config.val_every == 0 or done == config.epochs:
            val_psnr, val_ssim = validate(model, val_loader, d, amp, validation_ssim)
        improved = val_psnr is not None and val_psnr > result.best_psnr
        if improved:
            result.best_psnr, result.best_epoch = val_psnr, done
        seconds = time.perf_counter() - t0
        row = dict(epoch=done, lr=lr, train_loss=train_loss, val_psnr=val_psnr, val_ssim=val_ssim,
                   seconds=seconds)
        result.rows.append(row)
        if d.is_main:
            # The row goes first: a run killed between the two leaves a row past the checkpoint,
            # which --resume drops and redoes (the other order would lose the row for good).
            log.append(**row)
            ckpt = make_checkpoint(done, model, optimizer, scheduler, config.model, result.best_psnr,
                                   result.best_epoch, config.as_dict())
            save_atomic(ckpt, out / "last.pth")
            if improved:
                save_atomic(ckpt, out / "best.pth")
        metrics = ("" if val_psnr is None else f"  val PSNR {val_psnr:.2f} dB"
                   + ("" if val_ssim is None else f"  SSIM {val_ssim:.4f}") + ("  (best)" if improved else ""))
        say(f"epoch {done}/{config.epochs}  lr {lr:.3g}  loss {train_loss:.5f}{metrics}  {seconds:.1f} s")

    say(f"done: best validation PSNR {result.best_psnr:.2f} dB at epoch {result.best_epoch} "
        f"(inputs: {result.input_psnr:.2f} dB); checkpoints in {out}")
    return result

"""Train MPRNet on paired images (DIR/train, DIR/val) with the upstream recipe, the fast model and the fused losses.

`mprnet-kernels train --task T --data DIR --out RUN` (or `--train-dir A --val-dir B` for
upstream's folder layouts) writes RUN/last.pth (every epoch), RUN/best.pth (best validation
PSNR) and RUN/log.csv. `--resume` continues a run; `--init CHECKPOINT` starts a fresh one from
a checkpoint's weights (fine-tuning). Under `torchrun --nproc_per_node N` it trains with DDP,
the batch split over the processes. Only argparse is imported at the top so
`mprnet-kernels --help` stays quick; torch comes in with main().
"""

from __future__ import annotations

import argparse
import os
import sys

_EPILOG = """\
recipe (docs/MPRNET.md; every value can be overridden by its flag):
  task     preset   patch  batch  lr     warm-up  cosine to  epochs  loss
  deblur   deblur   256    16     2e-4   3        1e-6       3000    Charbonnier + 0.05 edge
  derain   derain   256    16     2e-4   3        1e-6       250     Charbonnier + 0.05 edge
  denoise  denoise  128    16     2e-4   3        1e-6       80      Charbonnier on outputs clamped to [0,1]
  Adam betas (0.9, 0.999), eps 1e-8. Presets small (n_feat 16, num_cab 2) and tiny (n_feat 8,
  num_cab 1) are for CPU demos and smoke tests.

data: --data DIR reads DIR/train and DIR/val; --train-dir A --val-dir B reads any two folders.
  Each holds input/NAME and target/NAME (same names, PNG or JPEG; upstream's SIDD patch script
  names the targets groundtruth/, also read). Upstream's layouts:
    GoPro (deblur)     --train-dir GoPro/train --val-dir GoPro/test
    Rain13K (derain)   --train-dir Datasets/train --val-dir Datasets/test/Rain100L
    SIDD (denoise)     --data SIDD   (SIDD/train and SIDD/val)
  Training draws one random patch per image per sample, with the same random flip/rotation on
  input and target; each epoch covers every pair at least once in ceil(pairs / batch) full
  batches. Validation scores whole images (reflect-padded to a multiple of 8, output cropped
  back): PSNR and SSIM of the stage-3 output clamped to [0,1].

speed: bf16 autocast and channels_last on CUDA (--no-amp: float32); float32 on CPU.
multi-GPU: torchrun --nproc_per_node N -m mprnet_kernels.cli train ... (nccl on CUDA, gloo on
  CPU); --batch stays the global batch.
resume: --resume continues RUN/last.pth (or --resume PATH, e.g. an upstream checkpoint with only
  epoch/state_dict/optimizer); flags not given take the checkpoint's values, so the continued
  run matches an uninterrupted one.
fine-tuning: --init PATH loads the weights alone (upstream's model_deblurring.pth and the like,
  a checkpoint of this command, a bare state_dict) and starts at epoch 0 with a fresh optimizer
  and schedule; the model is built to fit the checkpoint (--preset, if given, must agree).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .recipe import TASKS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    a = parser.add_argument
    a("--task", required=True, choices=TASKS, help="which recipe to train with")
    a("--data", metavar="DIR", help="folder with train/{input,target} and val/{input,target}; "
      "short for --train-dir DIR/train --val-dir DIR/val")
    a("--train-dir", metavar="DIR", help="training pairs: DIR/input and DIR/target (e.g. GoPro/train)")
    a("--val-dir", metavar="DIR", help="validation pairs: DIR/input and DIR/target (e.g. GoPro/test)")
    a("--out", required=True, metavar="RUN", help="run folder for last.pth, best.pth and log.csv (created)")
    a("--epochs", type=int, metavar="N", help="number of epochs (default: deblur 3000, derain 250, denoise 80)")
    a("--patch", type=int, metavar="P", help="training patch size, a multiple of 8 (default 256; denoise 128)")
    a("--batch", type=int, metavar="B", help="global batch size, split over processes (default 16)")
    a("--lr", type=float, metavar="LR", help="peak learning rate (default 2e-4)")
    a("--min-lr", type=float, metavar="LR", help="learning rate the cosine ends at (default 1e-6)")
    a("--warmup-epochs", type=int, metavar="N", help="linear warm-up epochs (default 3)")
    a("--edge-weight", type=float, metavar="W", help="weight of the edge loss (default 0.05; denoise 0)")
    a("--preset", metavar="NAME", help="model preset: deblur, derain, denoise, small or tiny (default: the task's)")
    a("--num-cab", type=int, metavar="N", help="channel-attention blocks per group, overriding the preset's")
    a("--seed", type=int, metavar="N", help="seed of the weights, data order and augmentation (default 0)")
    a("--workers", type=int, metavar="W", help="data loader workers per process (default: up to 8 on CUDA, 0 on CPU)")
    a("--device", metavar="DEV", help="cpu, cuda or cuda:N (default: cuda when available; cuda:LOCAL_RANK under torchrun)")
    amp = parser.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="bf16 autocast (the default on CUDA)")
    amp.add_argument("--no-amp", dest="amp", action="store_false", help="float32 throughout (the default on CPU)")
    a("--compile", action="store_true", help="torch.compile the model (CUDA: faster after a slow first step)")
    a("--val-every", type=int, metavar="N", help="validate every N epochs, and after the last (default 1)")
    a("--max-steps", type=int, metavar="N", help="end each epoch after at most N steps (smoke tests, quick demos)")
    a("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
      help="continue RUN/last.pth, or the given checkpoint")
    a("--init", metavar="CHECKPOINT", help="start from this checkpoint's weights with a fresh optimizer and "
      "schedule at epoch 0 (fine-tuning; upstream's release files too)")
    a("--overwrite", action="store_true", help="start afresh even though RUN holds an earlier run's last.pth")
    a("--no-progress", action="store_true", help="no progress bar on stderr")


def _fail(message: str) -> int:
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    prefix = f"[rank {os.environ.get('RANK', '0')}] " if world > 1 else ""
    print(f"{prefix}mprnet-kernels train: {message}", file=sys.stderr, flush=True)
    return 2


def build(args):
    """(TrainConfig, --resume checkpoint dict or None, --init checkpoint dict or None) from
    parsed arguments."""
    from pathlib import Path

    from .config import build_config
    from .errors import SetupError
    from .state import read_checkpoint, read_weights

    if args.init is not None and args.resume is not None:
        raise SetupError(f"--init {args.init} and --resume: give one; --resume continues a run (its "
                         "epoch, optimizer and schedule), --init starts a fresh run from a checkpoint's weights")
    checkpoint, weights, path = None, None, None
    if args.resume is not None:
        path = Path(args.out) / "last.pth" if args.resume is True else Path(args.resume)
        checkpoint = read_checkpoint(path)
    elif args.init is not None:
        path = Path(args.init)
        weights = read_weights(path)
    flags = {k: getattr(args, k) for k in ("epochs", "patch", "batch", "lr", "min_lr", "warmup_epochs",
                                           "edge_weight", "preset", "num_cab", "seed", "workers", "device",
                                           "amp", "val_every", "max_steps")}
    # Only a resumed run inherits its settings; an --init checkpoint gives the model's shape alone.
    inherited = checkpoint.get("args") if checkpoint is not None else None
    config = build_config(args.task, args.data, args.out, flags,
                          inherited if isinstance(inherited, dict) else None,
                          train_dir=args.train_dir, val_dir=args.val_dir)
    config.compile, config.overwrite, config.progress = args.compile, args.overwrite, not args.no_progress
    if checkpoint is not None:
        config.resume = str(path)
        fit_model(config, checkpoint, f"--resume {path}", args.preset, args.num_cab)
    elif weights is not None:
        config.init = str(path)
        fit_model(config, weights, f"--init {path}", args.preset, args.num_cab)
    return config, checkpoint, weights


def fit_model(config, checkpoint, source: str, preset, num_cab) -> None:
    """Build the model the checkpoint fits: its 'config', or the shapes of an upstream one. With
    --preset or --num-cab given, they must describe that same model."""
    from ..checkpoint import checkpoint_config
    from .config import describe_model, preset_of
    from .errors import SetupError
    from .state import reason

    try:
        found = checkpoint_config(checkpoint)
    except ValueError as e:
        raise SetupError(f"{source}: {reason(e)}") from None
    if preset is not None or num_cab is not None:
        if config.model != found:
            given = " ".join(f"{flag} {v}" for flag, v in (("--preset", preset), ("--num-cab", num_cab))
                             if v is not None)
            raise SetupError(f"{given} builds {describe_model(config.model)}, but {source} holds "
                             f"{describe_model(found)}; drop {given} to build the model the checkpoint fits")
        return
    config.model = found
    named = preset_of(found)
    if named is not None:  # so the log and a later --resume name the preset the weights are
        config.preset, config.num_cab = named


def main(args) -> int:
    from .errors import SetupError

    try:
        config, checkpoint, weights = build(args)
        from .trainer import train

        train(config, checkpoint=checkpoint, weights=weights)
    except SetupError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        _fail(f"interrupted; {args.out}/last.pth holds the last finished epoch: add --resume to continue")
        return 130
    return 0

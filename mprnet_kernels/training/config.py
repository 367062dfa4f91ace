"""The effective configuration of one training run: the task's recipe, the flags that override
it and, on --resume, the values the interrupted run used.

Precedence is explicit flag > checkpoint (when resuming) > recipe, so `--resume` alone continues
the same run and `--resume --epochs 500` extends it. --init (fine-tuning) inherits nothing but
the model's shape: its checkpoint's epoch, optimizer and schedule belong to another run.

Data: `--data DIR` is shorthand for `--train-dir DIR/train --val-dir DIR/val`; the two forms do
not mix. Each folder holds input/ and target/ (upstream's layout: GoPro's train/ and test/,
Rain13K's train/ and test/Rain100L, SIDD's train/ and val/), checked by data.find_pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from .errors import SetupError
from .recipe import RECIPES, TASKS, model_config, preset_names

#: Values that define the optimisation itself; on resume they default to the checkpoint's.
INHERITED = ("preset", "num_cab", "epochs", "patch", "batch", "lr", "min_lr", "warmup_epochs",
             "edge_weight", "clamp", "seed", "val_every", "max_steps")


@dataclass
class TrainConfig:
    task: str
    train_dir: str  # holds input/ and target/
    val_dir: str
    out: str
    preset: str
    model: Dict[str, Any]
    epochs: int
    patch: int
    batch: int  # global: summed over all processes
    lr: float
    min_lr: float
    warmup_epochs: int
    edge_weight: float
    clamp: bool
    seed: int = 0
    workers: Optional[int] = None  # None: chosen from the device (see Trainer)
    device: Optional[str] = None  # None: cuda when available, else cpu
    amp: Optional[bool] = None  # None: bf16 autocast on CUDA, float32 on CPU
    compile: bool = False
    val_every: int = 1
    max_steps: Optional[int] = None  # per epoch
    progress: bool = True
    overwrite: bool = False  # start afresh in a folder that holds an earlier run's last.pth
    resume: Optional[str] = None  # checkpoint path
    num_cab: Optional[int] = None  # the --num-cab override, kept so a resume can inherit it
    data: Optional[str] = None  # the --data root when the folders came from it, named in errors
    init: Optional[str] = None  # --init: the checkpoint whose weights the run starts from

    def as_dict(self) -> Dict[str, Any]:
        """Plain values only, so checkpoints load with torch.load(weights_only=True)."""
        return asdict(self)


def data_folders(data, train_dir, val_dir) -> Tuple[str, str]:
    """(training folder, validation folder) from --data or --train-dir/--val-dir (None where not
    given); SetupError naming the flags when they do not say one of the two."""
    if data is not None and (train_dir is not None or val_dir is not None):
        given = " and ".join(f for f, v in (("--train-dir", train_dir), ("--val-dir", val_dir)) if v is not None)
        raise SetupError(f"--data and {given}: give either --data DIR (for DIR/train and DIR/val) or "
                         "--train-dir and --val-dir, not both")
    if data is not None:
        return str(Path(data) / "train"), str(Path(data) / "val")
    if train_dir is None and val_dir is None:
        raise SetupError("no data: give --data DIR (holding train/ and val/) or --train-dir DIR and "
                         "--val-dir DIR (each holding input/ and target/)")
    if val_dir is None:
        raise SetupError(f"--train-dir {train_dir}: --val-dir is needed too (validation picks best.pth), "
                         "e.g. GoPro's test/ folder")
    if train_dir is None:
        raise SetupError(f"--val-dir {val_dir}: --train-dir is needed too")
    return str(train_dir), str(val_dir)


def build_config(task: str, data: Optional[str], out: str, flags: Dict[str, Any],
                 inherited: Optional[Dict[str, Any]] = None, *, train_dir: Optional[str] = None,
                 val_dir: Optional[str] = None) -> TrainConfig:
    """flags: the command line's values (None where not given); inherited: the resumed run's
    config (TrainConfig.as_dict() of it) or None. data, or train_dir and val_dir: the data
    folders (data_folders)."""
    if task not in TASKS:
        raise SetupError(f"--task: expected one of {', '.join(TASKS)}, got {task!r}")
    folders = data_folders(data, train_dir, val_dir)
    inherited = inherited or {}
    if inherited.get("task") not in (None, task):
        raise SetupError(f"--task {task}: the checkpoint being resumed was trained with --task "
                         f"{inherited['task']}")
    values = RECIPES[task].as_dict()
    values.update(seed=0, val_every=1, max_steps=None, num_cab=None)
    values.update({k: inherited[k] for k in INHERITED if k in inherited})
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        model = model_config(values["preset"], values.get("num_cab"))
    except ValueError as e:
        raise SetupError(str(e)) from None
    config = TrainConfig(task=task, train_dir=folders[0], val_dir=folders[1], out=str(out), model=model,
                         data=None if data is None else str(data),
                         **{k: values[k] for k in values if k in TrainConfig.__dataclass_fields__})
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Raises SetupError naming the flag whose value cannot work."""
    def need(ok: bool, flag: str, expected: str, value) -> None:
        if not ok:
            raise SetupError(f"{flag}: expected {expected}, got {value!r}")

    need(config.patch > 0 and config.patch % 8 == 0, "--patch",
         "a positive multiple of 8 (MPRNet halves the image 3 times)", config.patch)
    need(config.batch >= 1, "--batch", "at least 1", config.batch)
    need(config.epochs >= 1, "--epochs", "at least 1", config.epochs)
    need(config.lr > 0, "--lr", "a positive learning rate", config.lr)
    need(0 <= config.min_lr <= config.lr, "--min-lr", f"between 0 and --lr ({config.lr})", config.min_lr)
    need(config.warmup_epochs >= 0, "--warmup-epochs", "0 or more", config.warmup_epochs)
    need(config.edge_weight >= 0, "--edge-weight", "0 or more", config.edge_weight)
    need(config.workers is None or config.workers >= 0, "--workers", "0 or more", config.workers)
    need(config.val_every >= 1, "--val-every", "at least 1", config.val_every)
    need(config.max_steps is None or config.max_steps >= 1, "--max-steps", "at least 1", config.max_steps)


def describe(config: TrainConfig, world: int, device: str, amp: bool, workers: int) -> str:
    """The effective configuration, printed at start so a log says what a run did."""
    m = config.model
    source = (f"preset {config.preset}" if m == model_config(config.preset, config.num_cab)
              else "from the checkpoint")
    data = (f"data {config.data}" if config.data is not None
            else f"training data {config.train_dir}, validation data {config.val_dir}")
    lines = [
        f"task {config.task}: {data}, run folder {config.out}",
        f"model: {source} (n_feat {m['n_feat']}, scale_unetfeats {m['scale_unetfeats']}, "
        f"scale_orsnetfeats {m['scale_orsnetfeats']}, num_cab {m['num_cab']})",
        f"epochs {config.epochs}, patch {config.patch}, batch {config.batch}"
        + (f" ({config.batch // world} per process x {world})" if world > 1 else "")
        + (f", at most {config.max_steps} steps per epoch" if config.max_steps else ""),
        f"Adam lr {config.lr:g}, {config.warmup_epochs} warm-up epochs, cosine to {config.min_lr:g}; "
        f"loss: Charbonnier" + (f" + {config.edge_weight:g} x edge" if config.edge_weight else "")
        + (" on outputs clamped to [0, 1]" if config.clamp else ""),
        f"device {device}, {'bf16 autocast' if amp else 'float32'}"
        + (", torch.compile" if config.compile else "") + f", {workers} loader workers, seed {config.seed}, "
        f"validation every {config.val_every} epoch(s)",
    ]
    if config.init:
        lines.insert(2, f"weights from --init {config.init}; epoch 0, fresh optimizer and schedule")
    return "\n".join(lines)


def describe_model(model: Dict[str, Any]) -> str:
    """A model's constructor arguments in a few words: the preset it is, if one, and the widths."""
    preset = preset_of(model)
    widths = (f"n_feat {model['n_feat']}, scale_unetfeats {model['scale_unetfeats']}, "
              f"scale_orsnetfeats {model['scale_orsnetfeats']}, num_cab {model['num_cab']}")
    if preset is None:
        return f"a model of {widths}"
    return f"preset {preset[0]}" + (f" with --num-cab {preset[1]}" if preset[1] else "") + f" ({widths})"


def preset_of(model: Dict[str, Any]) -> Optional[Tuple[str, Optional[int]]]:
    """(preset, num_cab override or None) that builds exactly these constructor arguments, or None."""
    for name in preset_names():
        if model_config(name) == model:
            return name, None
    for name in preset_names():
        if isinstance(model.get("num_cab"), int) and model["num_cab"] >= 1 \
                and model_config(name, model["num_cab"]) == model:
            return name, model["num_cab"]
    return None

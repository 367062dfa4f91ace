"""Training MPRNet: data, the upstream recipe, the loop (DDP-ready), checkpoints."""

"""Training MPRNet: data, the upstream recipe, the loop (DDP-ready), checkpoints.

Modules, each small and named for what it holds:
    recipe       per-task defaults (the upstream recipe) and the presets `train` accepts
    config       the effective TrainConfig: flag > resumed checkpoint > recipe
    data         finding and checking image pairs; random patches; whole validation images
    sampler      the epoch's (pair, augmentation seed) list, sharded so processes add up to one
    schedule     linear warm-up then cosine, closed form per epoch
    (PSNR and SSIM are mprnet_kernels.metrics, shared with restore)
    validation   whole-image validation, sharded over processes
    distributed  torchrun's environment, the process group
    state        checkpoints (upstream format plus resume state), atomic writes
    runlog       RUN/log.csv
    trainer      train(config): the loop
    cli          `mprnet-kernels train`
Nothing is imported here, so `import mprnet_kernels.training.cli` stays light.
"""

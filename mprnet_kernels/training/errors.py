"""The one exception `train` raises for problems it finds before training starts.

The CLI turns it into a one-line message and exit status 2, so every check (arguments, folders,
image pairs, checkpoints to resume) says what is wrong and where, instead of a traceback from
deep inside the loader minutes later.
"""


class SetupError(ValueError):
    """Bad arguments, data or resume checkpoint; the message names the flag or the file."""

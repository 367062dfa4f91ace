"""`python -m mprnet_kernels ...` runs the `mprnet-kernels` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

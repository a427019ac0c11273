"""``python -m echosam.cli`` = the ``echosam`` command. Guarded: batch workers are started with
``spawn``, which imports the main module again in every worker."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m echosam.cli`` = the ``echosam`` command."""
import sys

from . import main

sys.exit(main())

"""EchoSAM engine: segment echocardiography cine loops (2D + time) with SAM-based video models.

Plain Python + PyTorch, importable without Slicer or Qt. The Slicer module (`EchoSAMSlicer.py`),
the `echosam` command and `training/` all sit on top of this package.

Importing `echosam` does not import torch; the model modules do, when they are used.
"""

__version__ = "0.1.0"

from .errors import CancelledError, CheckpointError, CineError, EchoSAMError, ModelError, PromptError

__all__ = ["__version__", "EchoSAMError", "CineError", "CheckpointError", "PromptError", "ModelError",
           "CancelledError"]

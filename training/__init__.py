"""Standalone training for EchoSAM models (MemSAM, MediViSTA, MA-SAM).

Front door next to the CLI and the Slicer module: it imports the engine (`echosam`), never the
other way round. Entry points::

    python -m training.train --config training/configs/memsam_camus.yaml [--resume PATH] [--set key=value ...]
    python -m training.evaluate --model runs/x/best.safetensors --data camus:/data/CAMUS --split test

Datasets (CAMUS 2023 NIfTI, EchoNet-Dynamic, synthetic phantom cines, a folder of cine + label
files) live in `training.datasets`; losses in `training.losses`; torchrun/DDP helpers in
`training.distributed`. See training/README.md.
"""

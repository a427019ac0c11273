"""Model families built on Meta's `segment_anything` package.

- `sam`: SAM ViT-B/L/H (and tiny test configs) at any input size; official checkpoint loading.
- `memsam`: MemSAM (CVPR 2024), prompted propagation with XMem-style memory (`memory`).
- `medivista`: MediViSTA (JBHI 2025), prompt-free temporal-fusion SAM.
- `masam`: MA-SAM (MedIA 2024), prompt-free 3D-adapter SAM.
- `registry`: the one way to build a model from a config.

Models know nothing about user prompts stores, MRML, the CLI or training (see `session.py`).
"""

"""Dataset-scale inference: ``echosam batch`` over folders, manifests, EchoNet-Dynamic or CAMUS.

One model per worker; every case goes through `pipeline.segment_cine` (what ``echosam segment``
does); resumable (one stored row per case, `state`); a process pool on one machine (`pool`) or Ray
actors on a cluster (`ray_backend`, optional: ``pip install echosam[scale]``); a summary table and,
with truth, EF agreement and figures.

Modules: `manifest` (inputs -> cases), `state` (rows, "done"), `runner` (one worker), `pool`,
`ray_backend`, `summary` (CSV/Parquet), `agreement` (MAE, RMSE, bias, R^2, figures), `run` (the driver).
Importing this package imports neither torch nor Ray.
"""
from .manifest import Case, Manifest, discover
from .run import BACKENDS, BatchConfig, BatchResult, run_batch
from .summary import read_summary_csv, without_timing

__all__ = ["Case", "Manifest", "discover", "BatchConfig", "BatchResult", "run_batch", "BACKENDS",
           "read_summary_csv", "without_timing"]

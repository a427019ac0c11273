"""A Ray cluster (or a local Ray): an actor pool, one `CaseRunner` (one loaded model) per actor.

Ray is optional (``pip install echosam[scale]``): it is imported only inside `run_ray`. The driver
(the ``echosam batch`` process) keeps the manifest, hands each idle actor one case at a time, writes
every result row as it comes back and builds the one summary; actors write a case's outputs into the
output folder, which on a cluster must therefore be a file system every node mounts at the same path.

- ``address``: ``None`` joins the cluster of ``RAY_ADDRESS`` or starts a local Ray; ``"auto"`` or
  ``"ray://host:10001"`` joins an existing cluster. A Ray that the caller already initialised
  (``ray.init(num_cpus=2)`` in a test) is used as it is and left running.
- each actor reserves ``spec.threads`` CPUs and ``gpus_per_worker`` GPUs (default: 1 when the
  cluster has GPUs and the device is not ``cpu``, else 0); Ray then shows each actor only its GPU.
- an actor that dies (node lost, killed, out of memory) is replaced and its case runs again; at
  ``max_attempts`` deaths it becomes an error row, as in the process pool.
"""
from __future__ import annotations

import os
from collections import Counter, deque

from ..errors import EchoSAMError
from .pool import check_setup, died_row
from .runner import CaseRunner


class CaseActor:
    """The actor class (made remote at run time, so that importing this module needs no Ray)."""

    def __init__(self, spec, index: int) -> None:
        self.spec, self.index, self.runner = spec, index, None

    def run(self, case) -> dict:
        if self.runner is None:
            try:
                self.runner = CaseRunner(self.spec, self.index)
            except Exception as exc:      # noqa: BLE001 - reported once by the driver, which stops
                return {"setup_error": " ".join(str(exc).split()) or type(exc).__name__}
        return self.runner.run(case)

    def pid(self) -> int:
        return os.getpid()


def cluster_gpus(ray) -> float:
    return float(ray.cluster_resources().get("GPU", 0))


def default_ray_workers(ray, threads: int, gpus_per_worker: float) -> int:
    """One actor per GPU share when actors use GPUs, else the cluster's CPUs over ``threads``."""
    if gpus_per_worker > 0:
        return max(1, int(cluster_gpus(ray) // gpus_per_worker))
    return max(1, int(float(ray.cluster_resources().get("CPU", 1)) // max(1, threads)))


def run_ray(cases, spec, workers=None, address=None, gpus_per_worker=None, max_attempts: int = 2):
    """Run ``cases`` on Ray actors; yields (case, row) in completion order (see the module doc)."""
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError:
        raise EchoSAMError("--backend ray needs Ray: pip install 'echosam[scale]' (or pip install ray).") from None

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="warning", log_to_driver=False)
    actors = []
    try:
        gpus = gpus_per_worker if gpus_per_worker is not None else (
            1.0 if cluster_gpus(ray) > 0 and spec.device != "cpu" else 0.0)
        n = workers or default_ray_workers(ray, spec.threads, gpus)
        remote = ray.remote(num_cpus=max(1, spec.threads), num_gpus=gpus, max_restarts=0)(CaseActor)
        made = iter(range(10 ** 9))
        actors = [remote.remote(spec, next(made)) for _ in range(n)]
        idle, pending, inflight, attempts = list(actors), deque(cases), {}, Counter()
        while pending or inflight:
            while pending and idle:
                actor, case = idle.pop(), pending.popleft()
                inflight[actor.run.remote(case)] = (actor, case)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, case = inflight.pop(ref)
                try:
                    row = ray.get(ref)
                except RayActorError:
                    attempts[case.case_id] += 1
                    ray.kill(actor, no_restart=True)
                    fresh = remote.remote(spec, next(made))
                    actors.append(fresh)
                    idle.append(fresh)
                    if attempts[case.case_id] >= max_attempts:
                        yield case, died_row(case, spec, attempts[case.case_id])
                    else:
                        pending.appendleft(case)
                    continue
                idle.append(actor)
                yield case, check_setup(row)
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:             # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()

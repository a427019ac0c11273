"""`echosam batch --backend ray` on a local Ray (``ray.init(num_cpus=2)``, shut down after): the fake
EchoNet-Dynamic tree gives the same summary as the process pool, the corrupt video an error row.
Ray is the optional ``scale`` extra: without it this module is skipped (CI installs it)."""
import pytest

ray = pytest.importorskip("ray")

from batch_data import OPTIONS, make_echonet, prompt_free_model  # noqa: E402
from echosam.batch import BatchConfig, read_summary_csv, run_batch, without_timing  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield
    ray.shutdown()


def test_ray_and_process_pool_give_the_same_summary(tmp_path, local_ray):
    tree = make_echonet(tmp_path / "echonet", n=3)
    cfg = dict(model=prompt_free_model(), options=dict(OPTIONS), threads_per_worker=1, workers=2)
    pool = run_batch(tree, tmp_path / "pool", BatchConfig(backend="pool", **cfg))
    by_ray = run_batch(tree, tmp_path / "ray", BatchConfig(backend="ray", **cfg))
    assert ray.is_initialized()                          # the caller's Ray is used and left running
    assert by_ray.ran == 4 and len(by_ray.workers) == 2
    assert [r["status"] for r in by_ray.rows] == ["ok", "ok", "ok", "error"]
    rows = read_summary_csv(tmp_path / "ray" / "summary.csv")
    assert without_timing(rows) == without_timing(read_summary_csv(tmp_path / "pool" / "summary.csv"))
    assert without_timing(pool.rows) == without_timing(by_ray.rows)
    again = run_batch(tree, tmp_path / "ray", BatchConfig(backend="ray", **cfg))     # resumable on Ray too
    assert again.ran == 0 and again.skipped == 4

"""Run logs: CSV tables (one row per optimizer step, one per epoch) and PNG curves (matplotlib Agg).
Only rank 0 writes."""
from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    """Append rows (dicts) to a CSV; the header is the first row's keys (extra keys appended)."""

    def __init__(self, path: Path, resume: bool = False):
        self.path = Path(path)
        self.fields: list = []
        if resume and self.path.exists():
            with open(self.path, newline="") as f:
                self.fields = next(csv.reader(f), [])
        elif self.path.exists():
            self.path.unlink()

    def write(self, row: dict) -> None:
        new = [k for k in row if k not in self.fields]
        if new and self.path.exists() and self.fields:
            rows = self.read()
            self.fields += new
            with open(self.path, "w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)
        elif new:
            self.fields += new
            with open(self.path, "w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.fields).writerow(row)

    def read(self) -> list:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            return list(csv.DictReader(f))


def plot_curves(steps_csv: Path, epochs_csv: Path, out_png: Path) -> None:
    """Training loss per step (and its moving average) and validation Dice per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = CsvLog(steps_csv, resume=True).read()
    epochs = CsvLog(epochs_csv, resume=True).read()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if steps:
        x = [int(r["step"]) for r in steps]
        y = [float(r["loss"]) for r in steps]
        a.plot(x, y, lw=0.6, alpha=0.5, label="loss")
        k = max(1, len(y) // 20)
        ma = [sum(y[max(0, i - k + 1): i + 1]) / len(y[max(0, i - k + 1): i + 1]) for i in range(len(y))]
        a.plot(x, ma, lw=1.5, label=f"moving mean ({k})")
        a.set_xlabel("optimizer step")
        a.set_ylabel("training loss")
        a.legend()
    vals = [r for r in epochs if r.get("val_dice") not in (None, "", "nan")]
    if vals:
        b.plot([int(r["epoch"]) for r in vals], [float(r["val_dice"]) for r in vals], "o-")
        b.set_xlabel("epoch")
        b.set_ylabel("validation mean Dice")
        b.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)

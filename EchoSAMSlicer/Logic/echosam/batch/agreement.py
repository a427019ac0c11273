"""Agreement of the batch's EF with the manifest's truth (EchoNet-Dynamic's EF, CAMUS's cfg EF ...).

Over the cases with status ``ok`` and a true EF (``d = predicted - true``, in EF points):
``n``; ``mae`` = mean |d|; ``rmse`` = sqrt(mean d^2); ``bias`` = mean d; ``sd`` = the standard
deviation of d (n - 1); limits of agreement ``bias -/+ 1.96 sd``; ``r2`` = 1 - sum d^2 / sum (true -
mean true)^2, the coefficient of determination of the predictions against the truth (what the
EchoNet-Dynamic paper reports as R^2, scikit-learn's ``r2_score(true, predicted)``); ``pearson_r``.

Figures in the form of the EchoNet-Dynamic paper (Ouyang et al., Nature 2020, Fig. 3): a scatter of
predicted against reported EF with the identity line, and a Bland-Altman plot (difference against
the mean of the two, bias and 95 % limits of agreement as lines).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.atomic import atomic_file

FILES = {"metrics": "agreement.json", "scatter": "ef_scatter.png", "bland_altman": "ef_bland_altman.png"}


def agreement(predicted, true) -> dict:
    """The metrics of the module docstring for paired sequences (EF %); ``n`` 0 gives None values."""
    p = np.asarray(predicted, dtype=float)
    t = np.asarray(true, dtype=float)
    n = int(len(p))
    keys = ("mae", "rmse", "bias", "sd", "loa_low", "loa_high", "r2", "pearson_r")
    if n == 0:
        return dict({"n": 0}, **{k: None for k in keys})
    d = p - t
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((d ** 2).sum()) / ss_tot if ss_tot > 0 else None
    r = float(np.corrcoef(p, t)[0, 1]) if n > 1 and p.std() > 0 and t.std() > 0 else None
    bias = float(d.mean())
    return {"n": n, "mae": float(np.abs(d).mean()), "rmse": float(np.sqrt((d ** 2).mean())), "bias": bias,
            "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "r2": r2, "pearson_r": r}


def pairs(rows: list, key: str = "ef_percent", truth: str = "true_ef") -> tuple:
    """(predicted, true, case ids) of the ``ok`` rows that have a truth value."""
    sel = [r for r in rows if r.get("status") == "ok" and r.get(key) is not None and r.get(truth) is not None]
    return [float(r[key]) for r in sel], [float(r[truth]) for r in sel], [r["case"] for r in sel]


def _figure():
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.6, 4.4), dpi=120)
    return fig, fig.add_subplot(111)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_scatter(predicted, true, path, m: Optional[dict] = None) -> Path:
    """Predicted vs reported EF (%), identity line, MAE and R^2 in the title."""
    m = m or agreement(predicted, true)
    fig, ax = _figure()
    lo = min(0.0, float(np.min(predicted, initial=0)), float(np.min(true, initial=0)))
    hi = max(100.0, float(np.max(predicted, initial=0)), float(np.max(true, initial=0)))
    ax.plot([lo, hi], [lo, hi], "--", color="#7f7f7f", lw=1)
    ax.scatter(true, predicted, s=10, color="#c0392b", alpha=0.6, edgecolors="none")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel("reported EF (%)")
    ax.set_ylabel("predicted EF (%)")
    r2 = "n/a" if m["r2"] is None else f"{m['r2']:.2f}"
    ax.set_title(f"EF, n = {m['n']}: MAE {m['mae']:.1f}, R$^2$ {r2}", fontsize=10)
    return _save(fig, Path(path))


def plot_bland_altman(predicted, true, path, m: Optional[dict] = None) -> Path:
    """Difference (predicted - reported) against the mean of the two, bias and 95 % limits."""
    m = m or agreement(predicted, true)
    p, t = np.asarray(predicted, dtype=float), np.asarray(true, dtype=float)
    fig, ax = _figure()
    ax.scatter((p + t) / 2, p - t, s=10, color="#2c7fb8", alpha=0.6, edgecolors="none")
    for y, style, label in ((m["bias"], "-", f"bias {m['bias']:+.1f}"),
                            (m["loa_low"], "--", f"-1.96 SD {m['loa_low']:+.1f}"),
                            (m["loa_high"], "--", f"+1.96 SD {m['loa_high']:+.1f}")):
        ax.axhline(y, ls=style, color="#333333", lw=1, label=label)
    ax.set_xlabel("mean of predicted and reported EF (%)")
    ax.set_ylabel("predicted - reported EF (%)")
    ax.set_title(f"Bland-Altman, n = {m['n']}", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, Path(path))


def write_agreement(rows: list, out) -> Optional[dict]:
    """agreement.json and both figures into ``out`` when any row has a true EF; returns the metrics
    (EF, and EDV/ESV when the truth has them) or None."""
    if not any(r.get("true_ef") is not None for r in rows):
        return None
    out = Path(out)
    p, t, ids = pairs(rows)
    metrics = {"ef": agreement(p, t),
               "cases_with_truth": sum(r.get("true_ef") is not None for r in rows),
               "cases_compared": len(ids)}
    for vol in ("edv", "esv"):
        vp, vt, _ = pairs(rows, f"{vol}_ml", f"true_{vol}")
        if vp:
            metrics[vol] = agreement(vp, vt)
    with atomic_file(out / FILES["metrics"], suffix=".json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=1) + "\n")
    if p:
        plot_scatter(p, t, out / FILES["scatter"], metrics["ef"])
        plot_bland_altman(p, t, out / FILES["bland_altman"], metrics["ef"])
    return metrics

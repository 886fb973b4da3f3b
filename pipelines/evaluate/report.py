"""Aggregation and presentation of evaluation results: summary per setting, table, rate–distortion plot.

Every setting (``codec_q{n}``, ``opus_{kbps}kbps``) is summarised over the evaluated tracks by the mean,
standard deviation and median of each metric (each track counts once, whatever its length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from codec.metrics import LOWER_IS_BETTER, codebook_stats

TABLE_METRICS = ("mel_distance", "stft_distance", "si_sdr", "visqol")
PLOT_METRICS = ("mel_distance", "stft_distance", "si_sdr", "visqol")


def summarise(values: list[float]) -> dict[str, float]:
    """Mean, std, median, min, max and count of finite values (NaN when none)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "median": float("nan"), "min": float("nan"),
                "max": float("nan"), "count": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max()), "count": int(v.size)}


def aggregate_settings(tracks: list[dict[str, Any]], settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``metrics`` (metric -> summary) of every setting from the per-track results.

    Args:
        tracks: per-track results, each with ``settings: {name: {metric: value}}``.
        settings: one dict per setting with at least ``name``; returned with ``metrics`` added, same order.
    """
    out = []
    for s in settings:
        per_metric: dict[str, list[float]] = {}
        for t in tracks:
            for metric, value in t["settings"].get(s["name"], {}).items():
                per_metric.setdefault(metric, []).append(float(value))
        out.append({**s, "metrics": {m: summarise(v) for m, v in sorted(per_metric.items())}})
    return out


def layer_report(counts: list[list[int]] | None, codebook_size: int, n_codebooks: int) -> list[dict[str, Any]]:
    """Per RVQ layer: ``layer`` (1-based), ``used`` codes, ``usage`` fraction and ``perplexity``."""
    c = torch.zeros(n_codebooks, codebook_size, dtype=torch.long) if counts is None else torch.tensor(counts)
    usage, perplexity = codebook_stats(c)
    return [{"layer": k + 1, "used": int((c[k] > 0).sum()), "usage": float(usage[k]),
             "perplexity": float(perplexity[k])} for k in range(c.shape[0])]


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics: ``{setting}/{metric}`` means, ``{setting}/kbps``, per-layer codebook stats, counts."""
    flat: dict[str, float] = {"tracks": report["tracks"], "skipped_tracks": len(report["skipped"]),
                              "audio_seconds": report["seconds"]}
    for s in report["settings"]:
        flat[f"{s['name']}/kbps"] = s["kbps"]
        for metric, summary in s["metrics"].items():
            if np.isfinite(summary["mean"]):
                flat[f"{s['name']}/{metric}"] = summary["mean"]
    for layer in report["codebook"]:
        flat[f"codebook_usage_l{layer['layer']}"] = layer["usage"]
        flat[f"codebook_perplexity_l{layer['layer']}"] = layer["perplexity"]
    return flat


def format_table(report: dict[str, Any]) -> str:
    """Plain-text table: one row per setting, mean (± std) of each metric present."""
    metrics = [m for m in TABLE_METRICS if any(m in s["metrics"] for s in report["settings"])]
    header = ["setting", "kbps", *[f"{m} {'↓' if LOWER_IS_BETTER.get(m, True) else '↑'}" for m in metrics]]
    rows = [header]
    for s in report["settings"]:
        row = [s["name"], f"{s['kbps']:g}"]
        for m in metrics:
            summary = s["metrics"].get(m)
            row.append("-" if summary is None or not summary["count"]
                       else f"{summary['mean']:.3f} ± {summary['std']:.3f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{report['tracks']} track(s), {report['seconds']:.1f} s of audio at {report['sample_rate']} Hz; "
             f"{len(report['skipped'])} skipped"]
    notes += [f"note: {n}" for n in report["notes"]]
    layers = ", ".join(f"l{x['layer']} {x['usage']:.2f}/{x['perplexity']:.0f}" for x in report["codebook"])
    notes.append(f"codebook usage/perplexity per layer: {layers}")
    return "\n".join(lines + notes)


def rate_distortion_plot(report: dict[str, Any], path: str | Path) -> Path | None:
    """Metric vs kbps for the codec (one line over n_q) and the Opus baseline (points). None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    metrics = [m for m in PLOT_METRICS if any(s["metrics"].get(m, {}).get("count") for s in report["settings"])]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for system, style in (("codec", "o-"), ("opus", "s--")):
            pts = sorted((s["kbps"], s["metrics"][metric]["mean"], s["name"]) for s in report["settings"]
                         if s["system"] == system and s["metrics"].get(metric, {}).get("count"))
            if not pts:
                continue
            xs, ys, names = zip(*pts, strict=True)
            ax.plot(xs, ys, style, label="muq-xcodec" if system == "codec" else "Opus")
            for x, y, n in pts:
                ax.annotate(n.split("_", 1)[1], (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ticks = sorted({s["kbps"] for s in report["settings"]})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("kbps")
        ax.set_ylabel(f"{metric} ({'lower' if LOWER_IS_BETTER.get(metric, True) else 'higher'} is better)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"rate–distortion: {report['model']['uri']} ({report['tracks']} tracks)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)

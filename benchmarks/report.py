"""One result line per measure, so `benchmarks/run_all.py` can gather every script's numbers in one table.

Each benchmark prints its own human-readable output and, for each measure, one machine-readable line:
``BENCH {"measure": ..., "unit": ..., "ours": ..., "baseline": ..., "baseline_value": ..., "ratio": ...}``.
"""

from __future__ import annotations

import json

PREFIX = "BENCH "


def emit(measure: str, unit: str, ours: float, baseline: str, baseline_value: float,
         higher_is_better: bool = True) -> dict:
    """Print one result line; ``ratio`` is ours / baseline (for a speed, > 1 means we are faster)."""
    row = {"measure": measure, "unit": unit, "ours": round(float(ours), 4), "baseline": baseline,
           "baseline_value": round(float(baseline_value), 4),
           "ratio": round(float(ours) / float(baseline_value), 3) if baseline_value else None,
           "higher_is_better": higher_is_better}
    print(PREFIX + json.dumps(row), flush=True)
    return row


def parse(text: str) -> list[dict]:
    """The result rows printed by a benchmark."""
    return [json.loads(line[len(PREFIX):]) for line in text.splitlines() if line.startswith(PREFIX)]


def init_ray(attempts: int = 3, **kwargs) -> None:
    """``ray.init(address="local", ...)`` retried: on a loaded machine the raylet can miss Ray's fixed 30 s
    registration deadline ("The current node timed out during startup")."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address="local", include_dashboard=False, log_to_driver=False, **kwargs)
            return
        except Exception as exn:
            ray.shutdown()
            if attempt == attempts - 1 or "timed out during startup" not in str(exn):
                raise

"""Drill 6: bad configs (unknown keys, wrong types, impossible values, missing model) fail before any Ray
work, exit != 0 and name the key -- for every job, run as ``python -m jobs.X`` in a subprocess.

Each subprocess runs the job module as ``__main__`` (``runpy``, i.e. ``python -m``) and, at exit, reports
whether ``ray`` was initialised (or even imported) in that process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# After the job exits (normally or via SystemExit), print one JSON line on stderr about Ray.
PROBE = """
import atexit, json, runpy, sys
def _probe():
    ray = sys.modules.get("ray")
    sys.stderr.write("\\nPROBE " + json.dumps({"ray_imported": ray is not None,
        "ray_initialized": bool(ray is not None and ray.is_initialized())}) + "\\n")
atexit.register(_probe)
job = sys.argv[1]
sys.argv = ["python -m " + job] + sys.argv[2:]
runpy.run_module(job, run_name="__main__", alter_sys=True)
"""

TINY = str(REPO / "configs/train/tiny_cpu.yaml")
CASES = [
    # (job, config, overrides, key that the message must name)
    ("jobs.train", TINY, ["scaling.num_wrkers=2"], "scaling.num_wrkers"),
    ("jobs.train", TINY, ["scaling.num_workers=0"], "scaling.num_workers"),
    ("jobs.train", TINY, ["schedule.max_steps=many"], "schedule.max_steps"),
    ("jobs.train", TINY, ["data.segment_seconds=-1.92"], "segment_seconds"),
    ("jobs.train", TINY, ["schedule.val_quantizers=[1,9]"], "val_quantizers"),
    ("jobs.tokenize", "configs/tokenize/smoke.yaml", ["input=/x", "output=/y", "compute.actorz=2"], "compute.actorz"),
    ("jobs.tokenize", "configs/tokenize/smoke.yaml", ["input=/x", "output=/y", "compute.actors=0"], "compute.actors"),
    ("jobs.tokenize", "configs/tokenize/smoke.yaml", ["input=/x", "output=/y", "n_q=9"], "n_q"),
    ("jobs.tokenize", "configs/tokenize/smoke.yaml", ["input=/x", "output=/y", "compute.batch_size=big"],
     "compute.batch_size"),
    ("jobs.tokenize", "configs/tokenize/default.yaml", ["input=/x", "output=/y"], "model"),
    ("jobs.prepare", "configs/prepare/smoke.yaml", ["shard_prefx=a"], "shard_prefx"),
    ("jobs.prepare", "configs/prepare/smoke.yaml", ["num_cpus=0"], "num_cpus"),
    ("jobs.prepare", "configs/prepare/smoke.yaml", ["max_samples_per_shard=-4"], "max_samples_per_shard"),
    ("jobs.prepare", "configs/prepare/smoke.yaml", ["batch_size=two"], "batch_size"),
    ("jobs.prepare", "configs/prepare/default.yaml", [], "inputs"),
    ("jobs.evaluate", "configs/evaluate/smoke.yaml", ["metrics.n_qq=[1]"], "metrics.n_qq"),
    ("jobs.evaluate", "configs/evaluate/smoke.yaml", ["metrics.n_q=[1,9]"], "n_q"),
    ("jobs.evaluate", "configs/evaluate/smoke.yaml", ["compute.actors=0"], "compute.actors"),
    ("jobs.evaluate", "configs/evaluate/smoke.yaml", ["max_tracks=-1"], "max_tracks"),
    ("jobs.evaluate", "configs/evaluate/default.yaml", ["shards=/x"], "model"),
]


def run_probe(job: str, args: list[str], tmp: Path) -> tuple[int, str, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "local",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    proc = subprocess.run([sys.executable, "-c", PROBE, job, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)
    probe = [ln for ln in proc.stderr.splitlines() if ln.startswith("PROBE ")]
    return proc.returncode, proc.stderr, json.loads(probe[-1][6:]) if probe else {}


@pytest.mark.slow
@pytest.mark.drill
@pytest.mark.parametrize(("job", "config", "overrides", "key"), CASES,
                         ids=[f"{c[0].split('.')[1]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_config_fails_before_ray_naming_the_key(tmp_path, job, config, overrides, key):
    t0 = time.perf_counter()
    code, stderr, probe = run_probe(job, ["--config", config, *overrides], tmp_path)
    assert code != 0, stderr[-2000:]
    assert "Traceback" not in stderr, f"{job} crashed instead of reporting the bad key:\n{stderr[-2000:]}"
    assert key in stderr, stderr[-2000:]
    assert probe == {"ray_imported": probe.get("ray_imported"), "ray_initialized": False}, stderr[-2000:]
    assert not (tmp_path / "mlflow.db").exists(), "an MLflow run was started for a bad config"
    print(f"{job} {overrides}: exit {code} in {time.perf_counter() - t0:.1f} s, ray imported={probe['ray_imported']}")

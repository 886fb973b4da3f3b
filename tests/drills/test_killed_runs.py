"""Drill (issue 17 item 2): a SIGKILLed tokenize driver leaves its MLflow run RUNNING; the rerun continues
that run, so after it exactly one run of the job exists and none is RUNNING (real sqlite store, real kill).

Prepare logs no MLflow run; evaluate opens its run only after the work and already continues it by name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from drill_utils import REPO, write_shards
from test_driver_kill import killed_run

CONFIG = str(REPO / "configs/tokenize/default.yaml")


def runs_of(db: Path, experiment: str) -> list:
    from pipelines.common.tracking import client

    c = client(f"sqlite:///{db}")
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id]) if exp is not None else []


@pytest.mark.slow
@pytest.mark.drill
@pytest.mark.parametrize("point", ["first_done", "before_run_end"])
def test_killed_tokenize_run_is_continued(ray_local, drill_tiny_dir, tmp_path, point):
    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    write_shards(tmp_path / "in", [{f"t{i}": (1.0, 24000, 1, "flac")} for i in range(2)])
    db = tmp_path / "mlflow.db"
    overrides = [f"model={drill_tiny_dir}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                 "progress=false", "compute.torch_threads=1", f"tracking.uri=sqlite:///{db}"]
    killed_run(ray_local, point, "jobs.tokenize", ["--config", CONFIG, *overrides], tmp_path)
    (left,) = runs_of(db, "tokenization")
    assert left.info.status == "RUNNING", "the kill did not leave a RUNNING run: the drill tests nothing"

    result = run_tokenize(load_tokenize_config(CONFIG, overrides), log=lambda _: None)
    assert result.ok and result.nothing_to_do == (point == "before_run_end")
    runs = runs_of(db, "tokenization")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(left.info.run_id, "FINISHED")]
    assert runs[0].data.metrics["tracks"] == 2
    print(f"tokenize killed at {point}: run {left.info.run_id[:8]} RUNNING -> continued by the rerun, FINISHED; "
          f"{len(runs)} run(s) in the store")

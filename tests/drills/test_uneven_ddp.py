"""Drill: DDP on train shards whose tracks give the ranks different blocks and batches (ray-project/ray#66085).

``streaming_split(equal=True)`` (Ray Train's ``DataConfig``) equalises rows per rank, not blocks; with a local
shuffle buffer, a block boundary yields a short batch mid-stream, so ranks see different numbers of batches
per epoch. A rank whose epoch ends first waits at the split's epoch barrier while the others wait for it in
DDP's all-reduce: a hang without an error. The drill trains a small DDP model with 2 Ray Train workers
through ``pipelines.train.loop.batches_forever`` on "tracks" of 1-13 segments (one block each), for several
epochs, three ways: Ray Train's split (equal rows) with and without local shuffle, and whole tracks per rank
(``streaming_split(equal=False)``: unequal rows and batches per rank, the case that hangs the old loop), in a child process with its own local Ray (killed on timeout), and
checks: it finishes in bounded time, every rank took the same number of optimizer steps, every rank called
``ray.train.report`` at every checkpoint step, and the run went through several epochs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from utils import kill_session

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SEGMENTS_PER_TRACK = [7, 3, 11, 1, 5, 13, 2, 6, 9, 4]  # 61 segments: 30 rows per rank after equalising
BATCH, STEPS, REPORT_EVERY, TIMEOUT_S = 4, 24, 6, 360

CHILD = r'''
import json, sys
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch
from ray.train.torch import TorchTrainer

out, mode, segments, batch, steps, every = (Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3]),
                                            int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))


def worker(config):
    from pipelines.train.loop import batches_forever

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    torch.manual_seed(0)
    model = ray.train.torch.prepare_model(torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    kwargs = {"shuffle_buffer_batches": 0} if config["mode"] == "no-shuffle" else {}
    shard = config["splits"][rank] if config["splits"] else ray.train.get_dataset_shard("train")
    batches = batches_forever(shard, config["batch"], device, 7 + rank, **kwargs)
    record = {"rank": rank, "optimizer_steps": 0, "reports": [], "batch_rows": set()}
    path = Path(config["out"]) / f"rank{rank}.json"
    for step in range(1, config["steps"] + 1):
        b = next(batches)
        record["batch_rows"].add(int(b["audio"].shape[0]))
        loss = model(b["audio"][:, 0]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        record["optimizer_steps"] += 1
        path.write_text(json.dumps({**record, "batch_rows": sorted(record["batch_rows"])}))
        if step % config["every"] == 0:
            ray.train.report({"step": step, "rank": rank})
            record["reports"].append(step)
            path.write_text(json.dumps({**record, "batch_rows": sorted(record["batch_rows"])}))
    batches.close()


ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
tracks = [np.full((n, 1, 16), i, dtype=np.float32) for i, n in enumerate(segments)]  # one block per track
train = ray.data.from_numpy(tracks).rename_columns({"data": "audio"})
# uneven-rows: whole tracks per rank (streaming_split(equal=False)), so the ranks' row counts differ too
splits = train.streaming_split(2, equal=False) if mode == "uneven-rows" else None
trainer = TorchTrainer(
    worker, train_loop_config={"out": str(out), "mode": mode, "batch": batch, "steps": steps, "every": every,
                               "splits": splits},
    scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
    run_config=ray.train.RunConfig(name="uneven", storage_path=str(out / "ray_results")),
    datasets={} if splits else {"train": train},
    dataset_config=ray.train.DataConfig(datasets_to_split=[] if splits else ["train"]))
trainer.fit()
(out / "done").write_text("ok")
'''


def run_child(out: Path, mode: str) -> tuple[int | None, str]:
    """Run the training child in its own process group; kill the group after TIMEOUT_S (a hang)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(out), mode,
                             json.dumps(SEGMENTS_PER_TRACK), str(BATCH), str(STEPS), str(REPORT_EVERY)],
                            cwd=out, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
        return proc.returncode, log
    except subprocess.TimeoutExpired:
        kill_session(proc)  # the child and the Ray processes it started
        log = proc.stdout.read()
        return None, log


@pytest.mark.parametrize("mode", ["uneven-rows", "local-shuffle", "no-shuffle"])
def test_uneven_batches_per_rank_train_in_lockstep(tmp_path, mode):
    rc, log = run_child(tmp_path, mode)
    records = {int(p.stem[4:]): json.loads(p.read_text()) for p in tmp_path.glob("rank*.json")}
    steps = {r: rec["optimizer_steps"] for r, rec in records.items()}
    assert rc is not None, f"training hung (killed after {TIMEOUT_S} s); optimizer steps per rank {steps}\n{log[-3000:]}"
    assert rc == 0 and (tmp_path / "done").exists(), log[-3000:]
    assert sorted(records) == [0, 1]
    assert steps == {0: STEPS, 1: STEPS}, steps
    expected_reports = list(range(REPORT_EVERY, STEPS + 1, REPORT_EVERY))
    assert all(rec["reports"] == expected_reports for rec in records.values()), records
    assert all(rec["batch_rows"] == [BATCH] for rec in records.values()), records  # full batches only
    rows_per_rank = sum(SEGMENTS_PER_TRACK) // 2
    assert STEPS * BATCH >= 3 * rows_per_rank  # several epochs: every rank rolled over at least twice

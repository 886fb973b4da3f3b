"""Drill 9 (multi-node): a worker node of a real multi-node Ray cluster (``ray.cluster_utils.Cluster``:
head + 2 worker nodes, one CPU each, loopback only) is removed while a job runs on it.

- Tokenization: the job must finish (Ray restarts the lost actor elsewhere and Ray Data retries its shard)
  and its output must be byte-identical to a clean single-node run.
- Training: 2 Ray Train workers on 2 nodes; after the first committed checkpoint the node of one worker is
  removed; ``FailureConfig`` must restart the group from that checkpoint and finish, in one MLflow run.

The cluster is private to this module (not the session's ``ray_local``): a Ray already initialised in this
process is shut down first and a local one like ``ray_local``'s is started again afterwards.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from drill_utils import REPO, assert_done_shards_valid, job_env, read_token_shard, visible_tree, write_shards
from utils import kill_session

from pipelines.common import shard_io as tio

CONFIG = str(REPO / "configs/tokenize/default.yaml")


@pytest.fixture
def cluster():
    """A head node (1 CPU) this process is connected to; tests add worker nodes. Torn down afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    had_ray = ray.is_initialized()
    if had_ray:
        ray.shutdown()
    c = Cluster(initialize_head=True, connect=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "node_ip_address": "127.0.0.1"})
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        if had_ray:  # give the rest of the session back a local Ray like ray_local's
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})


def overrides(model, root: Path, out: str, actors: int) -> list[str]:
    return [f"model={model}", f"input={root / 'in'}", f"output={root / out}", "progress=false",
            "compute.torch_threads=1", f"compute.actors={actors}", "tracking.enabled=false"]


def actor_nodes() -> set[str]:
    """Node ids hosting alive Ray Data map actors (read from the GCS: no dashboard runs here)."""
    from ray._private import state

    return {a["Address"]["NodeID"] for a in state.actors().values()
            if a["State"] == "ALIVE" and "MapWorker" in a.get("ActorClassName", "")}


@pytest.mark.slow
@pytest.mark.drill
def test_tokenize_survives_node_loss(cluster, drill_tiny_dir, tmp_path):
    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    write_shards(tmp_path / "in", [{f"s{i}a": (2.0, 24000, 1, "flac"), f"s{i}b": (1.5, 22050, 2, "wav")}
                                   for i in range(4)])
    t0 = time.perf_counter()  # the clean reference: the head node alone, one actor
    assert run_tokenize(load_tokenize_config(CONFIG, overrides(drill_tiny_dir, tmp_path, "clean", 1)),
                        log=lambda _: None).ok
    clean_s = time.perf_counter() - t0
    clean = visible_tree(tmp_path / "clean")

    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    out = tmp_path / "multi"
    done_dir = out / tio.DONE_DIR
    env = {**job_env(), "RAY_ADDRESS": cluster.address}
    # 2 actors on 3 one-CPU nodes: a lost actor has a free CPU to restart on. cwd=REPO: the driver's
    # code search path, so workers on every node import `pipelines`.
    args = [sys.executable, "-m", "jobs.tokenize", "--config", CONFIG, *overrides(drill_tiny_dir, tmp_path, "multi", 2)]
    log = tmp_path / "job.log"
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    removed = None
    try:
        deadline = time.monotonic() + 300
        while not (done_dir.is_dir() and any(done_dir.glob("*.json"))):
            assert proc.poll() is None, f"job exited before a shard was done:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no shard done in time"
            time.sleep(0.05)
        busy = actor_nodes()
        # remove a worker node that hosts a tokenizer actor (there is one: only one fits on the head)
        removed = next((w for w in workers if w.node_id in busy), workers[0])
        done_at_removal = len(list(done_dir.glob("*.json")))
        cluster.remove_node(removed, allow_graceful=False)
        removed_at = time.perf_counter() - t0
        rc = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            kill_session(proc)
    took = time.perf_counter() - t0
    text = log.read_text()
    assert rc == 0, f"job failed after the node loss (exit {rc}):\n{text[-3000:]}"
    assert "Done: 4/4 shard(s)" in text, text[-2000:]
    assert visible_tree(out) == clean, "multi-node output differs from the single-node run"
    assert assert_done_shards_valid(tio.read_done(str(out)), lambda n: (out / n).read_bytes()) == 4
    keys = [k for name in sorted(clean) if name.endswith(".tar") for k in read_token_shard(clean[name])]
    assert len(keys) == len(set(keys)) == 8
    print(f"multi-node tokenize: removed worker node (hosting actor: {removed.node_id in busy}) at "
          f"{removed_at:.1f} s with {done_at_removal}/4 shard(s) done; job finished in one go (exit 0) in "
          f"{took:.1f} s; output byte-identical to the single-node run ({clean_s:.1f} s)")


def actors_by_node() -> dict[str, set[str]]:
    """Node id -> class names of its alive actors."""
    from ray._private import state

    out: dict[str, set[str]] = {}
    for a in state.actors().values():
        if a["State"] == "ALIVE":
            out.setdefault(a["Address"]["NodeID"], set()).add(a.get("ActorClassName", ""))
    return out


@pytest.mark.slow
@pytest.mark.drill
def test_training_survives_node_loss(cluster, tmp_path, mlflow_sqlite):
    """2 Ray Train workers on 2 nodes; the node of one (not the controller's) is removed after the first
    checkpoint. FailureConfig restarts the group from that checkpoint: final step == max_steps, one run."""
    import threading

    from mlflow import MlflowClient
    from utils import write_corpus

    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare
    from pipelines.train.config import load_train_config
    from pipelines.train.driver import run_training

    write_corpus(tmp_path / "music", num_tracks=8, seconds=(4.0, 8.0), seed=0)  # has val keys
    run_prepare(load_prepare_config({"inputs": [str(tmp_path / "music")], "output": str(tmp_path / "shards"),
                                     "max_samples_per_shard": 4, "num_cpus": 0.5, "batch_size": 2,
                                     "progress": False}))
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    cluster.wait_for_nodes()
    max_steps = 6
    cfg = load_train_config(REPO / "configs/train/tiny_cpu.yaml", [
        f"data.shards=[{tmp_path / 'shards'}]", f"run.storage_path={tmp_path / 'ray_results'}", "run.name=nodeloss",
        f"tracking.uri={mlflow_sqlite}", "tracking.experiment=drill-train", "tracking.register_name=null",
        f"schedule.max_steps={max_steps}", "schedule.val_every=100", "schedule.checkpoint_every=2",
        "schedule.max_failures=2",
        "scaling.cpus_per_worker=0.6",  # at most one train worker per one-CPU node
        "loader.materialize=false"])  # the production path: each attempt streams from the shards again
    run_dir = tmp_path / "ray_results" / "nodeloss"
    event: dict[str, object] = {}

    def committed_checkpoint() -> str | None:
        """The checkpoint Ray Train has registered (its snapshot file): a folder alone may be uncommitted."""
        try:
            latest = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())["latest_checkpoint_result"]
        except (OSError, ValueError, KeyError):
            return None
        return latest and latest["checkpoint_dir_name"]

    def remove_after_first_checkpoint() -> None:
        deadline = time.monotonic() + 600
        while not committed_checkpoint() and time.monotonic() < deadline and "done" not in event:
            time.sleep(0.2)
        if "done" in event:
            return
        nodes = actors_by_node()
        hosting = [w for w in workers if "RayTrainWorker" in nodes.get(w.node_id, set())]
        safe = [w for w in hosting if not any("Controller" in c or "Coordinator" in c
                                              for c in nodes.get(w.node_id, set()))]
        victim = (safe or hosting or workers)[0]
        event.update(node=victim.node_id, classes=sorted(nodes.get(victim.node_id, set())),
                     checkpoint=committed_checkpoint())
        cluster.remove_node(victim, allow_graceful=False)
        event["at"] = time.monotonic()

    watcher = threading.Thread(target=remove_after_first_checkpoint, daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        result = run_training(cfg)
    finally:
        event["done"] = True
        watcher.join(timeout=30)
    took = time.monotonic() - t0
    assert "at" in event, "the node was never removed"
    assert result.metrics["step"] == max_steps
    c = MlflowClient(mlflow_sqlite)
    runs = c.search_runs([c.get_experiment_by_name("drill-train").experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id] and runs[0].info.status == "FINISHED"
    start = runs[0].data.tags["ray.attempt_start_step"]
    assert start != "0", "training restarted from scratch, not from the checkpoint"
    print(f"multi-node training: removed node hosting {event['classes']} at {event['at'] - t0:.1f} s after "
          f"{event['checkpoint']}; resumed from step {start}, finished step {result.metrics['step']} in "
          f"{took:.1f} s, 1 MLflow run")

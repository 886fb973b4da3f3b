"""Drill 9 (multi-node): a worker node of a real multi-node Ray cluster (``ray.cluster_utils.Cluster``:
head + 2 worker nodes, one CPU each, loopback only) is removed while the tokenize job runs on it. The job
must finish (Ray restarts the lost actor elsewhere and Ray Data retries its shard) and its output must be
byte-identical to a clean single-node run.

The cluster is private to this module (not the session's ``ray_local``): a Ray already initialised in this
process is shut down first and a local one like ``ray_local``'s is started again afterwards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from drill_utils import REPO, assert_done_shards_valid, job_env, read_token_shard, visible_tree, write_shards

from pipelines import tokenize_io as tio

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
    from pipelines.tokenize_config import load_tokenize_config
    from pipelines.tokenize_driver import run_tokenize

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
            os.killpg(proc.pid, 9)
            proc.wait()
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


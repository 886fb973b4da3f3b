"""Run a job module as ``python -m`` would, but SIGKILL the driver at a chosen point (drill 2).

    python tests/drills/kill_at.py POINT jobs.tokenize --config ... key=value ...

Points (tokenize): ``first_done`` (the driver got its first finished shard), ``mid_shard`` (an actor has
written a shard's tar and a stray temp file but not yet its done marker), ``before_manifest``,
``before_run_end`` (outputs complete, the MLflow run not yet ended).
Points (prepare): ``first_shard`` (one shard written), ``mid_transcode`` (3 files transcoded, a shard
half-filled in memory), ``before_manifest`` (shards and rejected.jsonl written, manifest not).
The kill is of the driver process itself (os.kill SIGKILL), as a crashed node or OOM killer would do.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time
from pathlib import Path

DRIVER_PID = os.getpid()


def die() -> None:
    sys.stdout.flush()
    os.kill(DRIVER_PID, signal.SIGKILL)
    time.sleep(60)


def patch_tokenize(point: str) -> None:
    import pipelines.tokenize.driver as drv
    import pipelines.tokenize.stage as tok

    if point == "first_done":
        real = drv._tokenize_dataset

        class KillAfterFirst:
            def __init__(self, ds):
                self.ds = ds

            def iter_rows(self):
                for row in self.ds.iter_rows():
                    yield row
                    die()

        drv._tokenize_dataset = lambda cfg, plan: KillAfterFirst(real(cfg, plan))
    elif point == "mid_shard":
        driver_pid = DRIVER_PID

        class KillMidShard(tok.ShardTokenizer):
            def __call__(self, batch):
                import pipelines.common.shard_io as tio

                real_write = tio.write_atomic

                def write(url, data, storage=None):
                    if f"/{tio.DONE_DIR}/" in url and url.endswith("-000001.json"):
                        folder = os.path.dirname(os.path.dirname(url))
                        with open(os.path.join(folder, ".tmp-partial-corpus-000001.tar"), "wb") as f:
                            f.write(b"\0" * 1000)  # a torn temp file, as a kill during write leaves
                        os.kill(driver_pid, signal.SIGKILL)
                        time.sleep(600)  # this actor dies with the job; the marker is never written
                    real_write(url, data, storage)

                tio.write_atomic = write
                try:
                    return super().__call__(batch)
                finally:
                    tio.write_atomic = real_write

        tok.ShardTokenizer = KillMidShard
    elif point == "before_manifest":
        drv.write_summary = lambda *a, **k: die()
    elif point == "before_run_end":
        drv._finish_mlflow = lambda *a, **k: die()
    else:
        raise SystemExit(f"unknown point {point}")


def patch_prepare(point: str) -> None:
    import pipelines.common.shards as shards
    import pipelines.prepare.driver as prep

    if point == "first_shard":
        real_flush = shards.ShardWriter.flush

        def flush(self):
            real_flush(self)
            if self.shards:
                die()

        shards.ShardWriter.flush = flush
    elif point == "mid_transcode":
        real_add = shards.ShardWriter.add
        count = [0]

        def add(self, *a, **k):
            real_add(self, *a, **k)
            count[0] += 1
            if count[0] == 3:
                die()

        shards.ShardWriter.add = add
    elif point == "before_manifest":
        prep.write_manifest = lambda *a, **k: die()
    else:
        raise SystemExit(f"unknown point {point}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, also for the Ray workers
    point, job = sys.argv[1], sys.argv[2]
    (patch_tokenize if job == "jobs.tokenize" else patch_prepare)(point)
    sys.argv = [job, *sys.argv[3:]]
    runpy.run_module(job, run_name="__main__", alter_sys=True)
    raise SystemExit(f"{job} finished without reaching kill point {point}")

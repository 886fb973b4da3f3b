"""Drill 2: SIGKILL of the tokenize and prepare drivers at 3 points each; a rerun ends byte-identical to an
uninterrupted run, nothing lost or duplicated, stray temp files ignored by every shard listing.

The killed drivers are subprocesses (``tests/drills/kill_at.py`` = ``python -m jobs.X`` + a kill point)
attached to the session's local Ray (``RAY_ADDRESS``), so no extra Ray start-up per kill; Ray reaps the
dead driver's actors. Reruns and the clean reference runs are in-process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from drill_utils import REPO, job_env, read_token_shard, visible_tree, write_shards
from utils import music_clip, write_audio

from pipelines.common import shard_io as tio

KILLER = str(Path(__file__).with_name("kill_at.py"))


def killed_run(ray_local, point: str, job: str, args: list[str], cwd: Path) -> float:
    env = {**job_env(), "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, KILLER, point, job, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, f"{job} not killed at {point} (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    time.sleep(2)  # let Ray reap the dead driver's workers
    return time.perf_counter() - t0


# --- tokenize -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok_input(tmp_path_factory, drill_tiny_dir, ray_local):
    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    root = tmp_path_factory.mktemp("kill-tok")
    write_shards(root / "in", [{f"t{i}a": (2.0, 24000, 1, "flac"), f"t{i}b": (1.5, 22050, 2, "wav")}
                               for i in range(3)])
    clean = load_tokenize_config(REPO / "configs/tokenize/default.yaml", tok_overrides(drill_tiny_dir, root, "clean"))
    assert run_tokenize(clean, log=lambda _: None).ok
    return root, visible_tree(root / "clean")


def tok_overrides(model, root: Path, out: str) -> list[str]:
    return [f"model={model}", f"input={root / 'in'}", f"output={root / out}", "progress=false",
            "compute.torch_threads=1", "tracking.enabled=false"]


@pytest.mark.slow
@pytest.mark.drill
@pytest.mark.parametrize("point", ["first_done", "mid_shard", "before_manifest"])
def test_tokenize_driver_killed(ray_local, drill_tiny_dir, tok_input, point):
    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    root, clean = tok_input
    out = root / point
    overrides = tok_overrides(drill_tiny_dir, root, point)
    took = killed_run(ray_local, point, "jobs.tokenize",
                      ["--config", str(REPO / "configs/tokenize/default.yaml"), *overrides], root)
    done_at_kill = sorted(p.name for p in (out / tio.DONE_DIR).glob("*.json"))
    assert not (out / "manifest.json").exists()
    if point == "mid_shard":  # the torn state: shard 1's tar written, its marker not, a temp file beside it
        assert (out / "corpus-000001.tar").exists() and "corpus-000001.json" not in done_at_kill
        assert (out / ".tmp-partial-corpus-000001.tar").exists()
    if point == "before_manifest":
        assert len(done_at_kill) == 3

    t0 = time.perf_counter()
    result = run_tokenize(load_tokenize_config(REPO / "configs/tokenize/default.yaml", overrides),
                          log=lambda _: None)
    assert result.ok
    assert visible_tree(out) == clean, "resumed output differs from the uninterrupted run"
    keys = [k for name in sorted(clean) if name.endswith(".tar") for k in read_token_shard(clean[name])]
    assert len(keys) == len(set(keys)) == 6  # nothing lost, nothing duplicated
    assert [tio.shard_name(s) for s in tio.list_shards(str(out))] == [
        "corpus-000000.tar", "corpus-000001.tar", "corpus-000002.tar"]  # the stray temp file is never a shard
    print(f"tokenize killed at {point} after {took:.1f} s with {len(done_at_kill)} done marker(s); "
          f"rerun redid {result.shards_run} shard(s) in {time.perf_counter() - t0:.1f} s -> byte-identical")


# --- prepare --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prep_input(tmp_path_factory, ray_local):
    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare

    root = tmp_path_factory.mktemp("kill-prep")
    for i in range(7):
        rate = (16000, 22050, 44100)[i % 3]
        write_audio(root / "music" / f"song{i}.flac", music_clip(1.0, rate, 1 + i % 2, seed=i), rate)
    (root / "music" / "broken.wav").write_bytes(b"RIFF not really")
    run_prepare(load_prepare_config(str(REPO / "configs/prepare/default.yaml"), prep_overrides(root, "clean")))
    return root, visible_tree(root / "clean")


def prep_overrides(root: Path, out: str) -> list[str]:
    return [f"inputs=[{root / 'music'}]", f"output={root / out}", "max_samples_per_shard=2", "progress=false",
            "num_cpus=0.5", "batch_size=1"]


@pytest.mark.slow
@pytest.mark.drill
@pytest.mark.parametrize("point", ["first_shard", "mid_transcode", "before_manifest"])
def test_prepare_driver_killed(ray_local, prep_input, point):
    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare

    root, clean = prep_input
    out = root / point
    overrides = prep_overrides(root, point)
    took = killed_run(ray_local, point, "jobs.prepare",
                      ["--config", str(REPO / "configs/prepare/default.yaml"), *overrides], root)
    at_kill = sorted(visible_tree(out))
    assert "manifest.json" not in at_kill
    (out / ".tmp-x1y2z3-shard-000001.tar").write_bytes(b"\0" * 700)  # as a kill inside write_atomic leaves

    t0 = time.perf_counter()
    manifest = run_prepare(load_prepare_config(str(REPO / "configs/prepare/default.yaml"), overrides))
    assert visible_tree(out) == clean, "rerun output differs from the uninterrupted run"
    assert manifest["num_samples"] == 7 and manifest["num_shards"] == 4
    assert [json.loads(r)["reason"] for r in (out / "rejected.jsonl").read_text().splitlines()] == ["undecodable"]
    listed = [Path(p).name for p in tio.list_shards(str(out))]
    assert listed == [s["path"] for s in manifest["shards"]], "a temp file is listed as a shard"
    print(f"prepare killed at {point} after {took:.1f} s with {at_kill}; rerun {time.perf_counter() - t0:.1f} s "
          f"-> byte-identical, {manifest['num_samples']} samples once each")

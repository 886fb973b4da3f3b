"""Drill 4 (shards part): a hostile WebDataset shard set through the tokenize job and the training data
pipeline. 0 crashes, every bad sample reported with a reason (tokenize: stats.json ``skipped``; data
pipeline: skip counts), every good sample processed exactly once (per shard), nothing written outside the
output dir, and the tokenize job's peak RSS (whole process tree: driver, Ray, actors) under a bound.

The set: shard 0 holds good tracks at 8 kHz / 24 kHz / 192 kHz / 6 channels, a 1-sample track, a truncated
FLAC, a zero-byte member, random bytes named .flac, a NaN wav, members named ``../x.flac`` and
``/abs/y.flac`` and a good track with a 5 MB garbage .json; shard 1 repeats shard 0's key ``dup``; shard 2
is a real tar cut in the middle of its last member.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from drill_utils import REPO, _load, job_env, read_token_shard, tree_bytes
from utils import music_clip

from pipelines.common.shards import tar_bytes

bad_input = _load("_drill_bad_input_helpers", "tests/pipelines/data/test_bad_input.py")
encode, nan_wav, truncated_flac = bad_input.encode, bad_input.nan_wav, bad_input.truncated_flac

RSS_BOUND = 4 << 30  # any one process (driver, raylet, the tokenizer actor...)
TREE_BOUND = 8 << 30  # summed over the tree: shared pages of ~10 Ray processes counted again each


def clip(seconds: float, sr: int, channels: int, seed: int) -> bytes:
    return encode(music_clip(seconds, sr, channels, seed=seed), sr)


def hostile_shards(root: Path) -> None:
    s0 = [("good_a.flac", clip(2.0, 24000, 1, 1)), ("good_a.json", b'{"title": "a"}'),
          ("rate8k.wav", encode(music_clip(2.0, 8000, 1, seed=2), 8000, "WAV", "PCM_16")),
          ("rate192k.flac", clip(1.5, 192000, 2, 3)),
          ("six.flac", clip(2.0, 48000, 6, 4)),
          ("trunc.flac", truncated_flac(3.0)[0]),
          ("zero.flac", b""),
          ("random.flac", np.random.default_rng(1).bytes(4096)),
          ("nan.wav", nan_wav(1.0)),
          ("one.wav", encode(np.full((1, 1), 0.1, np.float32), 24000, "WAV", "PCM_16")),
          ("dup.flac", clip(2.0, 24000, 1, 5)),
          ("../x.flac", clip(1.0, 24000, 1, 6)),
          ("/abs/y.flac", clip(1.0, 24000, 1, 8)),
          ("bigjson.flac", clip(2.0, 24000, 1, 10)), ("bigjson.json", np.random.default_rng(2).bytes(5 << 20))]
    s1 = [("dup.flac", clip(2.0, 24000, 1, 11)), ("good_c.flac", clip(2.0, 22050, 2, 12))]
    s2 = tar_bytes([(f"good_{k}.flac", clip(2.0, 24000, 1, 13 + i)) for i, k in enumerate("def")])
    root.mkdir(parents=True)
    (root / "corpus-000000.tar").write_bytes(tar_bytes(s0))
    (root / "corpus-000001.tar").write_bytes(tar_bytes(s1))
    (root / "corpus-000002.tar").write_bytes(s2[: len(s2) - 2 * 512 - 10_000])  # ends inside good_f.flac


TOKENIZED = {"corpus-000000.tar": ["bigjson", "dup", "good_a", "one", "rate192k", "rate8k", "six", "trunc"],
             "corpus-000001.tar": ["dup", "good_c"], "corpus-000002.tar": ["good_d", "good_e"]}
TOKENIZE_SKIPS = {("corpus-000000.tar", "zero"): "empty", ("corpus-000000.tar", "random"): "undecodable",
                  ("corpus-000000.tar", "nan"): "nonfinite", ("corpus-000000.tar", "../x"): "unsafe_key",
                  ("corpus-000000.tar", "/abs/y"): "unsafe_key", ("corpus-000002.tar", "good_f"): "truncated"}


def run_with_peak_rss(args: list[str], cwd: Path, env: dict[str, str],
                      timeout: float) -> tuple[int, str, tuple[int, int], float]:
    """Run a command, polling the RSS of its whole process tree.

    Returns (exit, output, (peak of the largest process, peak of the tree sum) in bytes, seconds)."""
    import psutil

    t0 = time.perf_counter()
    log = cwd / "job.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    root, peak, tree = psutil.Process(proc.pid), 0, 0
    try:
        while proc.poll() is None:
            assert time.perf_counter() - t0 < timeout, "tokenize job timed out"
            total = largest = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        rss = p.memory_info().rss
                        total, largest = total + rss, max(largest, rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak, tree = max(peak, largest), max(tree, total)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    log.unlink()
    return proc.returncode, out, (peak, tree), time.perf_counter() - t0


@pytest.mark.slow
@pytest.mark.drill
def test_tokenize_survives_hostile_shards(drill_tiny_dir, tmp_path):
    hostile_shards(tmp_path / "in")
    assert not Path("/abs").exists()
    before = tree_bytes(tmp_path)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "jobs.tokenize", "--config", str(REPO / "configs/tokenize/default.yaml"),
            f"model={drill_tiny_dir}", f"input={tmp_path / 'in'}", f"output={out}", "progress=false",
            "compute.torch_threads=1", "tracking.enabled=false"]
    # RAY_ADDRESS=local: the job starts its own Ray, so every actor is in the measured process tree
    rc, text, (peak, tree), took = run_with_peak_rss(args, tmp_path, job_env(), timeout=400)
    assert rc == 0, text[-3000:]

    stats = json.loads((out / "stats.json").read_text())
    assert {(s["shard"], s["key"]): s["reason"].split(":")[0] for s in stats["skipped"]} == TOKENIZE_SKIPS
    assert all(s["reason"].split(":", 1)[1].strip() for s in stats["skipped"]), stats["skipped"]
    assert stats["complete"] and stats["shards"] == 3 and stats["tracks"] == sum(map(len, TOKENIZED.values()))
    tracks = {name: read_token_shard((out / name).read_bytes()) for name in TOKENIZED}
    assert {name: sorted(t) for name, t in tracks.items()} == TOKENIZED  # each good sample once per shard
    s0 = tracks["corpus-000000.tar"]
    assert s0["one"]["codes.npy"].shape == (8, 1) and s0["one"]["json"]["num_samples"] == 1
    assert (s0["rate192k"]["json"]["sample_rate"], s0["six"]["json"]["channels"]) == (192000, 6)
    assert 0 < s0["trunc"]["json"]["duration"] < 3.0  # the decodable prefix of the truncated FLAC
    assert "source_meta" not in s0["bigjson"]["json"] and s0["good_a"]["json"]["source_meta"] == {"title": "a"}
    assert not np.array_equal(s0["dup"]["codes.npy"], tracks["corpus-000001.tar"]["dup"]["codes.npy"])

    after = tree_bytes(tmp_path)  # nothing written outside out/ (nor at ../x or /abs/y)
    assert {k: v for k, v in after.items() if not k.startswith("out/")} == before
    assert not Path("/abs").exists()
    names = [n for name in TOKENIZED for n in tarfile_names(out / name)]
    assert not [n for n in names if n.startswith("/") or ".." in n.split("/")], names
    assert peak < RSS_BOUND and tree < TREE_BOUND, (peak, tree)
    print(f"hostile shards -> tokenize: {stats['tracks']} tracks in 3 shards, {len(stats['skipped'])} skipped "
          f"{sorted(Counter(r.split(':')[0] for r in (s['reason'] for s in stats['skipped'])).items())}; "
          f"exit 0 in {took:.1f} s; peak RSS {peak / 2**20:.0f} MiB (largest process), "
          f"{tree / 2**20:.0f} MiB (whole tree summed)")


def tarfile_names(path: Path) -> list[str]:
    from drill_utils import tar_members

    return tar_members(path.read_bytes())


@pytest.mark.slow
@pytest.mark.drill
def test_data_pipeline_survives_hostile_shards(ray_local, tmp_path):
    from pipelines.data.config import load_data_config
    from pipelines.data.dataset import build_segment_dataset, skip_counts
    from pipelines.data.training import build_training_dataset

    hostile_shards(tmp_path / "in")
    before = tree_bytes(tmp_path)
    cfg = load_data_config({"shards": [str(tmp_path / "in")], "segment_seconds": 1.0, "segments_per_track": 1,
                            "val_fraction": 0.0, "semantic": {"enabled": False}})
    t0 = time.perf_counter()
    rows = build_segment_dataset(cfg, split=None, keep_skipped=True).take_all()
    good, skipped = skip_counts(rows)
    assert good == {"good_a", "rate8k", "rate192k", "six", "dup", "../x", "/abs/y", "bigjson", "good_c", "good_d",
                    "good_e"}
    # trunc.flac's prefix and the cut tar's tail are `truncated`; the 1-sample track is too short
    assert skipped == Counter({"truncated": 2, "empty": 1, "undecodable": 1, "nonfinite": 1, "too_short": 1})
    details = {str(r["key"]): str(r["detail"]) for r in rows if r["skip_reason"]}
    assert all(details.values()), details
    assert "good_e.flac" in details["__truncated_tail__"]  # the tail after the last whole member
    train = build_training_dataset(cfg, split="train").take_all()
    keys = Counter(str(r["key"]) for r in rows if not r["skip_reason"])
    assert keys == Counter({**{k: 1 for k in good}, "dup": 2})  # once per shard
    assert len(train) == sum(keys.values())
    assert all(r["audio"].shape == (1, 24000) and np.isfinite(r["audio"]).all() for r in train)
    assert tree_bytes(tmp_path) == before  # read-only: nothing written anywhere under the test dir
    print(f"hostile shards -> data pipeline: {len(good)} good keys ({sum(keys.values())} segments), skipped "
          f"{dict(sorted(skipped.items()))} in {time.perf_counter() - t0:.1f} s; training dataset {len(train)} rows")

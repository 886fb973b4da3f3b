"""Training data pipeline: segment cutting, repeated keys, and the Ray pipeline with a 2-actor MuQ stage."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from utils import music_clip

from codec.allocator import malloc_env
from pipelines.common.config import ConfigError
from pipelines.common.shards import tar_bytes
from pipelines.data.config import load_data_config
from pipelines.data.dataset import RenameRepeatedKeys, SplitFilter, build_teacher
from pipelines.data.feature_cache import cache_matches, write_feature_cache
from pipelines.data.segments import SegmentSpec, cut_segments, segment_samples
from pipelines.data.training import build_training_dataset

TINY_TEACHER = {"source": "random", "dim": 32, "depth": 1, "heads": 2, "conv_dim": 8, "seed": 0}


def flac(audio: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format="FLAC", subtype="PCM_24")
    return buf.getvalue()


def test_segment_length_is_a_multiple_of_960():
    assert segment_samples(5.0) == 120000
    assert segment_samples(1.01) == 24000 and segment_samples(0.01) == 960


def test_cut_segments_matches_full_decode_and_is_seeded():
    sr = 44100
    x = music_clip(4.0, sr, 2, seed=4)
    data = flac(x, sr)
    spec = SegmentSpec(length=24000, per_track=3, seed=1)
    segs = cut_segments(data, "k", spec)
    assert [s.shape for _, s in segs] == [(24000,)] * 3
    reference = AF.resample(torch.from_numpy(x.mean(axis=1)), sr, 24000).numpy()
    for start, seg in segs:  # windowed decode + resample agrees with resampling the whole track
        np.testing.assert_allclose(seg[200:-200], reference[start + 200:start + 24000 - 200], atol=2e-3)
    assert [s for s, _ in cut_segments(data, "k", spec)] == [s for s, _ in segs]
    assert [s for s, _ in cut_segments(data, "k", spec, epoch=1)] != [s for s, _ in segs]


def test_rename_repeated_keys():
    rename = RenameRepeatedKeys()
    names = ["a.flac", "a.json", "a.flac", "a.json", "b.flac", "a.flac", "d/c.flac", "NOEXT"]
    assert [rename(n) for n in names] == ["a.flac", "a.json", "a#dup1.flac", "a#dup1.json", "b.flac",
                                          "a#dup2.flac", "d/c.flac", "NOEXT"]


def test_data_config_checks():
    with pytest.raises(ConfigError, match="val_fraction"):
        load_data_config({"val_fraction": 1.5})
    with pytest.raises(ConfigError, match="bogus"):
        load_data_config({"bogus": 1})
    cfg = load_data_config({"segment_seconds": 5.0}, ["semantic.actors=3"])
    assert cfg.semantic.actors == 3 and cfg.segment_seconds == 5.0
    with pytest.raises(ConfigError, match=r"^teacher.random: renamed: use teacher.source=random"):
        load_data_config({"teacher": {"random": {"dim": 32}}})


def write_shards(root, n_tracks: int = 8) -> list[str]:
    """Two shards of prepare-style samples (KEY.flac + KEY.json) at mixed rates and channels."""
    layouts = [(44100, 2), (24000, 1), (48000, 2), (16000, 1)]
    keys, shards = [], [[], []]
    for i in range(n_tracks):
        sr, ch = layouts[i % 4]
        key = f"track_{i:03d}"
        shards[i % 2] += [(f"{key}.flac", flac(music_clip(2.2 + 0.1 * i, sr, ch, seed=i), sr)),
                          (f"{key}.json", json.dumps({"key": key}).encode())]
        keys.append(key)
    root.mkdir(parents=True, exist_ok=True)
    for j, members in enumerate(shards):
        (root / f"shard-{j:06d}.tar").write_bytes(tar_bytes(members))
    return keys


@pytest.mark.slow
def semantic_actor_envs() -> list[dict[str, str]]:
    """The start environment of every running MuQ feature actor process of this test's Ray."""
    import psutil

    envs = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "SemanticStage" in " ".join(proc.cmdline()):
                envs.append(proc.environ())
        except psutil.Error:
            pass
    return envs


def test_pipeline_yields_aligned_audio_and_semantic_from_two_actors(tmp_path, ray_local):
    keys = write_shards(tmp_path / "shards")
    cfg = load_data_config({
        "shards": [str(tmp_path / "shards" / "shard-*.tar")], "segment_seconds": 1.0, "segments_per_track": 2,
        "val_fraction": 0.25, "teacher": TINY_TEACHER, "cache_dir": str(tmp_path / "cache"),
        "semantic": {"actors": 2, "batch_size": 4, "num_gpus": 0}})
    train_keys = {k for k in keys if SplitFilter("train", 0.25)({"key": k})}
    val_keys = {k for k in keys if SplitFilter("val", 0.25)({"key": k})}
    assert train_keys and val_keys and not train_keys & val_keys and train_keys | val_keys == set(keys)

    teacher = build_teacher(cfg.teacher)
    n = 0
    actor_envs: list[dict[str, str]] = []  # the MuQ actors' start environment (data.semantic.tune_malloc)
    ds = build_training_dataset(cfg, "train")
    for batch in ds.iter_torch_batches(batch_size=4):
        actor_envs = actor_envs or semantic_actor_envs()
        audio, semantic = batch["audio"], batch["semantic"]
        assert audio.shape[1:] == (1, 24000) and audio.dtype == torch.float32
        assert semantic.shape == (audio.shape[0], 25, 32) and semantic.dtype == torch.float32
        torch.testing.assert_close(semantic, teacher(audio), atol=1e-4, rtol=1e-4)  # aligned to its audio
        n += audio.shape[0]
    assert n == 2 * len(train_keys)
    assert actor_envs and all(env.items() >= malloc_env().items() for env in actor_envs), actor_envs
    # the CPU stage ran inside the read tasks (one per shard; a split read is not fused, and the unfused
    # pipeline moved every raw block through the object store, issue 16), and apart from the MuQ actors
    stats = ds.stats()
    assert "ReadTolerantWebDataset->MapBatches(ShardSegments):" in stats, stats
    assert "MapBatches(ShardSegments)->MapBatches(SemanticStage)" not in stats, stats

    # feature cache: written once, then used by the training pipeline (same rows, no teacher needed)
    assert not cache_matches(cfg)
    manifest = write_feature_cache(cfg)
    assert manifest["num_samples"] == 2 * len(keys) and cache_matches(cfg)
    cached = build_training_dataset(cfg, "val").take_all()
    assert len(cached) == 2 * len(val_keys)
    for row in cached:
        got = teacher(torch.from_numpy(np.array(row["audio"]))[None])[0].numpy()
        np.testing.assert_allclose(row["semantic"], got, atol=1e-4)

"""Corpus preparation: keys, deterministic tars, lossless FLAC, and the whole job on a mixed folder."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import webdataset as wds
from utils import music_clip, write_audio, write_mixed_folder

from jobs.prepare import main as prepare_main
from pipelines.common.audio_decode import EMPTY, UNDECODABLE, decode_sample
from pipelines.common.config import ConfigError
from pipelines.common.shards import sample_key, tar_bytes
from pipelines.prepare.config import load_prepare_config
from pipelines.prepare.stage import transcode


def test_sample_key_is_stable_unique_and_dot_free():
    a, b = sample_key("Rock/My Song.v2.mp3"), sample_key("Rock/My_Song_v2.mp3")
    assert a.startswith("Rock__My_Song_v2_mp3-") and "." not in a and "/" not in a
    assert a != b and a == sample_key("Rock/My Song.v2.mp3")
    assert sample_key("x.wav") != sample_key("x.flac")
    assert len(sample_key("d/" * 200 + "x.wav")) <= 96 + 9


def test_tar_bytes_is_reproducible_with_fixed_metadata():
    members = [("k.flac", b"abc"), ("k.json", b"{}")]
    assert tar_bytes(members) == tar_bytes(members)
    with tarfile.open(fileobj=io.BytesIO(tar_bytes(members))) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["k.flac", "k.json"]
    assert all(i.mtime == 0 and i.uid == 0 and i.gid == 0 and i.uname == "" for i in infos)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_transcode_integer_pcm_is_bit_exact(tmp_path, subtype):
    path = write_audio(tmp_path / "a.wav", music_clip(0.5, 44100, 2, seed=3), 44100, subtype=subtype)
    with open(path, "rb") as f:
        flac, facts = transcode(f)
    assert facts["sample_rate"] == 44100 and facts["channels"] == 2 and facts["stored_as"] == "flac" and facts["stored_subtype"] == subtype
    dtype = "int16" if subtype == "PCM_16" else "int32"
    np.testing.assert_array_equal(sf.read(io.BytesIO(flac), dtype=dtype)[0], sf.read(path, dtype=dtype)[0])


def test_prepare_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="inputs"):
        load_prepare_config({})
    with pytest.raises(ConfigError, match="max_samples_per_shard"):
        load_prepare_config({"inputs": ["x"], "max_samples_per_shard": 0})
    with pytest.raises(ConfigError, match="no_such_key"):
        load_prepare_config({"inputs": ["x"], "no_such_key": 1})


@pytest.mark.slow
def test_prepare_mixed_folder_roundtrip_and_determinism(tmp_path, ray_local):
    expected = write_mixed_folder(tmp_path / "music")
    out = tmp_path / "shards"
    cfg = ["--config", "configs/prepare/default.yaml", f"inputs=[{tmp_path / 'music'}]", f"output={out}",
           "max_samples_per_shard=3", "progress=false", "num_cpus=0.5"]
    prepare_main(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_samples"] == len(expected) and manifest["num_shards"] == 3
    assert [s["samples"] for s in manifest["shards"]] == [3, 3, 1]

    seen = {}
    shard_paths = [str(out / s["path"]) for s in manifest["shards"]]
    for sample in wds.WebDataset(shard_paths, shardshuffle=False):
        meta = json.loads(sample["json"])
        assert sample["__key__"] == meta["key"] == sample_key(meta["relpath"]) and "." not in meta["key"]
        audio, sr = decode_sample(sample)
        seen[meta["relpath"]] = (sr, audio.shape[0], audio.shape[1])
        assert meta["duration"] == pytest.approx(audio.shape[1] / sr, abs=1e-6)
        assert len(meta["sha256"]) == 64
    assert seen == expected  # every good file exactly once, at its own rate, channels and length
    assert manifest["total_duration"] == pytest.approx(sum(f / sr for sr, _, f in expected.values()), abs=1e-3)

    rejected = [json.loads(line) for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert sorted((r["source"].rsplit("/", 1)[-1], r["reason"]) for r in rejected) == [
        ("broken.mp3", UNDECODABLE), ("empty.flac", EMPTY)]

    # a rerun (e.g. after a kill) gives byte-identical output
    out2 = tmp_path / "shards2"
    prepare_main([*cfg[:3], f"output={out2}", *cfg[4:]])
    for name in [s["path"] for s in manifest["shards"]] + ["manifest.json", "rejected.jsonl"]:
        assert (out / name).read_bytes() == (out2 / name).read_bytes(), name
    assert not list(out.glob(".tmp-*"))

"""Bad input: every kind is decoded, skipped with a reason, or survives; never a crash, never a lost sample."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from utils import music_clip

from pipelines.common.audio_decode import (
    DUPLICATE_KEY,
    EMPTY,
    NO_AUDIO,
    NONFINITE,
    SILENT,
    TOO_SHORT,
    UNDECODABLE,
    Skip,
    decode_sample,
)
from pipelines.common.shards import tar_bytes
from pipelines.data.config import load_data_config
from pipelines.data.dataset import build_segment_dataset, skip_counts


def encode(audio: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def nan_wav(seconds: float = 3.0, sr: int = 16000) -> bytes:
    x = music_clip(seconds, sr, 1, seed=5)
    x[::50] = np.nan  # every window sees NaNs
    return encode(x, sr, "WAV", "FLOAT")


def truncated_flac(seconds: float = 6.0, sr: int = 16000) -> tuple[bytes, int]:
    full = encode(music_clip(seconds, sr, 1, seed=6), sr)
    return full[: len(full) // 2], sr


def hour_long_flac(path) -> None:
    """1 hour at 8 kHz mono, written block by block (never a 1-hour array)."""
    block = (music_clip(10.0, 8000, 1, seed=7) * 32767).astype(np.int16)
    with sf.SoundFile(str(path), "w", 8000, 1, "PCM_16", format="FLAC") as f:
        for _ in range(360):
            f.write(block)


# --- decode_sample (unit) ------------------------------------------------------------------------------


@pytest.mark.parametrize(("sr", "channels"), [(8000, 1), (96000, 2), (48000, 6), (24000, 1)])
def test_decode_rates_and_channels(sr, channels):
    x = music_clip(0.5, sr, channels, seed=1)
    audio, rate = decode_sample({"__key__": "k", "flac": encode(x, sr, subtype="PCM_24")})
    assert rate == sr and audio.shape == (channels, x.shape[0]) and audio.dtype == np.float32
    np.testing.assert_allclose(audio, x.T, atol=2e-6)


@pytest.mark.parametrize(("suffix", "fmt", "subtype"), [("wav", "WAV", "PCM_16"), ("mp3", "MP3", None),
                                                         ("ogg", "OGG", "VORBIS"), ("opus", "OGG", "OPUS")])
def test_decode_any_audio_suffix(suffix, fmt, subtype):
    x = music_clip(1.0, 48000, 2, seed=2)
    audio, rate = decode_sample({"__key__": "k", suffix: encode(x, 48000, fmt, subtype), "json": b"{}"})
    assert rate == 48000 and audio.shape[0] == 2 and abs(audio.shape[1] - 48000) < 2000


@pytest.mark.parametrize(("sample", "reason"), [
    ({"__key__": "k", "flac": b""}, EMPTY),
    ({"__key__": "k", "flac": b"not audio at all" * 20}, UNDECODABLE),
    ({"__key__": "k", "json": b"{}", "txt": b"hello"}, NO_AUDIO),
    ({"__key__": "k", "wav": nan_wav()}, NONFINITE),
])
def test_decode_bad(sample, reason):
    result = decode_sample(sample)
    assert isinstance(result, Skip) and result.reason == reason


def test_decode_truncated_keeps_prefix():
    data, sr = truncated_flac()
    audio, rate = decode_sample({"__key__": "k", "flac": data})
    assert rate == sr and 0 < audio.shape[1] < 6 * sr and np.isfinite(audio).all()


# --- the pipeline over a shard set holding every bad kind (Ray) --------------------------------------------


@pytest.mark.slow
def test_pipeline_counts_every_bad_kind(tmp_path, ray_local):
    hour = tmp_path / "hour.flac"
    hour_long_flac(hour)
    good = {
        "rate8k": ("flac", encode(music_clip(3.0, 8000, 1, seed=10), 8000)),
        "rate96k": ("flac", encode(music_clip(2.5, 96000, 2, seed=11), 96000)),
        "mono": ("flac", encode(music_clip(3.0, 24000, 1, seed=12), 24000)),
        "six_channels": ("flac", encode(music_clip(3.0, 48000, 6, seed=13), 48000)),
        "mp3_member": ("mp3", encode(music_clip(3.0, 44100, 2, seed=14), 44100, "MP3")),
        "opus_member": ("opus", encode(music_clip(3.0, 48000, 1, seed=15), 48000, "OGG", "OPUS")),
        "one_hour": ("flac", hour.read_bytes()),
        "truncated": ("flac", truncated_flac()[0]),
    }
    shard0 = []
    for key, (suffix, data) in good.items():
        shard0 += [(f"{key}.{suffix}", data), (f"{key}.json", b"{}")]
    shard0 += [("with_text.flac", encode(music_clip(3.0, 22050, 1, seed=16), 22050)), ("with_text.txt", b"notes")]
    # duplicate keys: an adjacent repeat and a non-adjacent one (first occurrence kept)
    dup = encode(music_clip(3.0, 16000, 1, seed=17), 16000)
    shard0 += [("dup.flac", dup), ("dup.json", b"{}"), ("dup.flac", dup), ("dup.json", b"{}")]
    shard0 += [("dup2.flac", dup), ("between.txt", b"x"), ("dup2.flac", dup)]
    shard1 = [
        ("corrupt.flac", b"\x00garbage" * 64), ("corrupt.json", b"{}"),
        ("empty.flac", b""), ("empty.json", b"{}"),
        ("missing_audio.json", b"{}"),
        ("nan.wav", nan_wav()),
        ("short.flac", encode(music_clip(0.5, 24000, 1, seed=18), 24000)),
        ("silent.flac", encode(np.zeros((3 * 24000, 1), np.float32), 24000)),
    ]
    (tmp_path / "shards").mkdir()
    for i, members in enumerate([shard0, shard1]):
        (tmp_path / "shards" / f"bad-{i:06d}.tar").write_bytes(tar_bytes(members))
    cfg = load_data_config({"shards": [str(tmp_path / "shards")], "segment_seconds": 1.0, "segments_per_track": 2,
                            "val_fraction": 0.0})
    rows = build_segment_dataset(cfg, split=None, keep_skipped=True).take_all()
    good_keys, skipped = skip_counts(rows)
    assert good_keys == {*good, "with_text", "dup", "dup2"}
    assert skipped == Counter({UNDECODABLE: 1, EMPTY: 1, NO_AUDIO: 2, NONFINITE: 1, TOO_SHORT: 1, SILENT: 1,
                               DUPLICATE_KEY: 2})
    segs = [r for r in rows if not r["skip_reason"]]
    assert len(segs) == 2 * len(good_keys)
    for r in segs:
        assert r["audio"].shape == (1, 24000) and np.isfinite(r["audio"]).all()
        assert np.sqrt(np.mean(r["audio"] ** 2)) > 1e-3
    assert Counter(r["key"] for r in segs) == Counter({k: 2 for k in good_keys})

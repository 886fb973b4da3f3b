"""Drill 4 (prepare part): a hostile music folder. 0 crashes, every bad file rejected with a reason that names
what it is, or kept exactly, or kept with each change counted in its .json and the manifest (truncated,
clipped samples); every good file processed once, nothing written outside the output folder, no hang on a FIFO.
The data-pipeline side of hostile shards is tests/pipelines/data/test_bad_input.py."""

from __future__ import annotations

import io
import json
import resource

import numpy as np
import pytest
import soundfile as sf
from drill_utils import REPO
from utils import music_clip


def enc(x: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def claims_two_hours(sr: int = 8000) -> bytes:
    """A 1 s FLAC whose STREAMINFO says 2 h (header lies; the data ends early)."""
    b = bytearray(enc(music_clip(1.0, sr, 1, seed=3), sr))
    v = int.from_bytes(b[18:26], "big")
    v = (v & ~((1 << 36) - 1)) | (2 * 3600 * sr)
    b[18:26] = v.to_bytes(8, "big")
    return bytes(b)


def loud_float_wav() -> tuple[bytes, np.ndarray]:
    """A 32-bit float wav peaking at ±4 (legal in float PCM; FLAC cannot hold it). Returns (bytes, samples)."""
    x = (4.0 * music_clip(1.0, 16000, 1, seed=11) / np.abs(music_clip(1.0, 16000, 1, seed=11)).max()).astype(np.float32)
    return enc(x, 16000, "WAV", "FLOAT"), x


def loud_mp3() -> bytes:
    """An mp3 of a hard-limited sine: its decoder overshoots ±1 (as loud masters do)."""
    x = np.clip(1.5 * np.sin(np.arange(44100) / 5.0), -1, 1).astype(np.float32)
    return enc(x, 44100, "MP3")


def id3_only() -> bytes:
    """An ID3v2.4 tag (one TIT2 title frame) and nothing else: no MPEG frames."""
    frame = b"TIT2" + (6).to_bytes(4, "big") + b"\0\0" + b"\x03title"
    return b"ID3\x04\x00\x00" + bytes([0, 0, 0, len(frame)]) + frame


def make_non_regular(root) -> dict[str, str]:
    """Audio-named entries that are not regular files. Returns name -> what the rejection must name."""
    import os

    (root / "folder.wav").mkdir()
    (root / "folder.wav" / "inside.txt").write_text("not audio")
    os.mkfifo(root / "pipe.wav")  # opening it for reading would block until a writer comes: never opened
    (root / "broken.flac").symlink_to(root / "nowhere.flac")
    (root / "loop.mp3").symlink_to(root / "loop.mp3")
    return {"folder.wav": "a directory", "pipe.wav": "a FIFO", "broken.flac": "a broken symlink",
            "loop.mp3": "a symlink loop"}


def hostile_folder(root) -> tuple[set[str], dict[str, str]]:
    """Returns (good file names, bad file name -> expected "reason" / "reason: detail part", "kept" (truncated),
    "clipped", "exact" or None (either kept short or rejected))."""
    files: dict[str, bytes] = {}
    good = {"ok_24k.flac": enc(music_clip(1.0, 24000, 1, seed=1), 24000),
            "ok_8k.wav": enc(music_clip(1.0, 8000, 1, seed=2), 8000, "WAV", "PCM_16"),
            "ok_192k.flac": enc(music_clip(0.5, 192000, 2, seed=4), 192000),
            "ok_6ch.flac": enc(music_clip(0.5, 48000, 6, seed=5), 48000),
            "one_sample.wav": enc(np.full((1, 1), 0.1, np.float32), 24000, "WAV", "PCM_16"),
            "ok.mp3": enc(music_clip(1.0, 44100, 2, seed=6), 44100, "MP3")}
    nan = music_clip(1.0, 16000, 1, seed=7)
    nan[100] = np.nan
    inf = music_clip(1.0, 16000, 1, seed=8)
    inf[5] = np.inf
    full_flac, full_mp3 = enc(music_clip(3.0, 16000, 1, seed=9), 16000), good["ok.mp3"]
    bad = {"nan.wav": (enc(nan, 16000, "WAV", "FLOAT"), "nonfinite"),
           "inf.wav": (enc(inf, 16000, "WAV", "FLOAT"), "nonfinite"),
           "zero.flac": (b"", "empty"),
           "random.wav": (np.random.default_rng(0).bytes(4096), "undecodable"),
           "random.flac": (np.random.default_rng(1).bytes(4096), "undecodable"),
           "nine_ch.wav": (enc(music_clip(0.2, 8000, 9, seed=10), 8000, "WAV", "PCM_16"), "unsupported"),
           "trunc.flac": (full_flac[: len(full_flac) // 2], "kept"),
           "trunc.mp3": (full_mp3[: len(full_mp3) // 3], "kept"),
           "header_2h.flac": (claims_two_hours(), None),  # kept (truncated) or rejected: never 2 h in RAM
           "header_only.flac": (full_flac[:60], None),
           "loud_float.wav": (loud_float_wav()[0], "exact"),
           "loud.mp3": (loud_mp3(), "clipped"),
           "wav_short.wav": (enc(music_clip(2.0, 8000, 1, seed=12), 8000, "WAV", "PCM_16")[:8000], "kept"),
           "id3_only.mp3": (id3_only(), "empty: only an ID3 tag")}
    for name, data in good.items():
        files[name] = data
    for name, (data, _) in bad.items():
        files[name] = data
    files["notes.json"] = b"{" + b'"x": 1,' * 200_000  # a huge bogus json: not audio, never picked up
    files["dup/ok_24k.flac"] = good["ok_24k.flac"]
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    non_regular = {name: f"not_a_file: {name} is {what}" for name, what in make_non_regular(root).items()}
    return set(good), {**{k: v for k, (_, v) in bad.items()}, **non_regular}


@pytest.mark.slow
@pytest.mark.drill
def test_prepare_survives_hostile_folder(ray_local, tmp_path):
    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare

    good, bad = hostile_folder(tmp_path / "music")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out" / "shards"
    manifest = run_prepare(load_prepare_config(str(REPO / "configs/prepare/default.yaml"), [
        f"inputs=[{tmp_path / 'music'}]", f"output={out}", "progress=false", "num_cpus=0.5"]))
    rejected = {json.loads(ln)["source"].split("/music/", 1)[1]: json.loads(ln)
                for ln in (out / "rejected.jsonl").read_text().splitlines()}
    kept, members = {}, {}
    import webdataset as wds

    for s in wds.WebDataset([str(out / s["path"]) for s in manifest["shards"]], shardshuffle=False):
        meta = json.loads(s["json"])
        kept[meta["relpath"]] = meta
        members[meta["key"]] = next((k, v) for k, v in s.items() if k in ("flac", "wav"))
    assert good <= set(kept), f"good files lost: {good - set(kept)}"
    for name, reason in bad.items():
        if reason == "kept":
            assert name in kept and kept[name]["truncated"], (name, kept.get(name))
        elif reason == "exact":
            assert name in kept and not kept[name]["truncated"] and kept[name]["clipped_samples"] == 0, name
        elif reason == "clipped":
            assert name in kept and kept[name]["clipped_samples"] > 0, (name, kept.get(name))
        elif reason is None:
            assert (name in kept and kept[name]["frames"] < 10**6) or rejected[name]["reason"], name
        else:
            got = rejected.get(name, {})
            assert f"{got.get('reason')}: {got.get('detail')}".startswith(reason), (name, got)
    assert kept["wav_short.wav"]["declared_frames"] == 16000 > kept["wav_short.wav"]["frames"]  # header said 2 s
    # the float source is stored bit-exactly (a float wav member), not clipped to [-1, 1]
    assert members[kept["loud_float.wav"]["key"]][0] == "wav"
    stored, _ = sf.read(io.BytesIO(members[kept["loud_float.wav"]["key"]][1]), dtype="float32", always_2d=True)
    np.testing.assert_array_equal(stored, loud_float_wav()[1])
    assert manifest["changes"] == {"truncated": sum(m["truncated"] for m in kept.values()),
                                   "clipped": sum(m["clipped_samples"] > 0 for m in kept.values()),
                                   "clipped_samples": sum(m["clipped_samples"] for m in kept.values())}
    assert manifest["changes"]["truncated"] >= 3 and manifest["changes"]["clipped"] >= 1
    assert set(kept) | set(rejected) == good | set(bad) | {"dup/ok_24k.flac"}
    assert not set(kept) & set(rejected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "out"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shards"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print({k: rejected[k]["reason"] for k in sorted(rejected)})
    print(f"changes: {manifest['changes']}")
    print(f"hostile folder: {len(good)} good + {len(bad) + 2} bad files -> {len(kept)} kept "
          f"({sum(1 for m in kept.values() if m.get('truncated'))} truncated), {len(rejected)} rejected "
          f"{sorted({r['reason'] for r in rejected.values()})}; driver peak RSS {peak_mb:.0f} MB")

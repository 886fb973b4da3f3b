"""Tokenization stage pieces: shard I/O, deterministic tars, length batching, stats, and the
ShardTokenizer stage itself (in-process, tiny codec, no Ray)."""

from __future__ import annotations

import io
import json
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import soundfile as sf
import torch
from utils import music_clip

from pipelines.common import shard_io as tio
from pipelines.tokenize.config import load_tokenize_config
from pipelines.tokenize.decode import decode_shard
from pipelines.tokenize.driver import OutputMismatchError, plan_tokenize
from pipelines.tokenize.stage import ShardTokenizer, Track, codebook_counts, length_batches
from pipelines.tokenize.stats import build_stats, layer_stats


def encoded(audio: np.ndarray, sample_rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format=fmt)
    return buf.getvalue()


def write_shard(path, tracks: dict[str, tuple[float, int, int, str]], extra: dict[str, bytes] | None = None) -> None:
    """tracks: key -> (seconds, rate, channels, format); extra: raw members added as-is."""
    members = dict(extra or {})
    for i, (key, (seconds, rate, channels, fmt)) in enumerate(sorted(tracks.items())):
        members[f"{key}.{fmt}"] = encoded(music_clip(seconds, rate, channels, seed=i), rate, fmt.upper())
        members[f"{key}.json"] = json.dumps({"title": key}).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tio.tar_bytes(members))


def test_tar_bytes_is_deterministic_and_normalised():
    a = tio.tar_bytes({"b.json": b"{}", "a.codes.npy": b"123"})
    assert a == tio.tar_bytes({"a.codes.npy": b"123", "b.json": b"{}"})
    with tarfile.open(fileobj=io.BytesIO(a)) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["a.codes.npy", "b.json"]
    assert all((i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode) == (0, 0, 0, "", "", 0o644) for i in infos)


def test_iter_samples_groups_members_by_key():
    blob = tio.tar_bytes({"x/a.flac": b"1", "x/a.json": b"2", "b.tar.wav": b"3"})
    samples = list(tio.iter_samples(io.BytesIO(blob)))
    assert samples == [{"__key__": "b", "tar.wav": b"3"}, {"__key__": "x/a", "flac": b"1", "json": b"2"}]


def test_list_shards_dir_glob_brace_and_name_clash(tmp_path):
    for name in ("s-000000.tar", "s-000001.tar", "s-000002.tar"):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")
    (tmp_path / "in" / "manifest.json").write_text("{}")
    every = tio.list_shards(str(tmp_path / "in"))
    assert [tio.shard_name(p) for p in every] == ["s-000000.tar", "s-000001.tar", "s-000002.tar"]
    assert tio.list_shards(str(tmp_path / "in" / "s-00000[12].tar")) == every[1:]
    assert tio.list_shards(str(tmp_path / "in" / "s-{000000..000001}.tar")) == every[:2]
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "sub" / "s-000000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="s-000000.tar"):
        tio.check_output_names(tio.list_shards(str(tmp_path / "in")))
    with pytest.raises(FileNotFoundError):
        tio.list_shards(str(tmp_path / "nothing"))


def test_length_batches_sort_by_rate_and_length():
    def track(key, seconds, sr):
        return Track(key, b"", sample_rate=sr, num_samples=int(seconds * sr), channels=1, suffix="wav")

    tracks = [track("a", 3, 8000), track("b", 20, 8000), track("c", 5, 8000), track("d", 4, 44100),
              track("e", 200, 8000)]
    batches = length_batches(tracks, batch_size=2, batch_seconds=60)
    assert [[t.key for t in b] for b in batches] == [["e"], ["b", "c"], ["a"], ["d"]]
    assert all(len({t.sample_rate for t in b}) == 1 for b in batches)


def test_layer_stats_perplexity():
    uniform = np.ones((1, 16), np.int64)
    one_code = np.zeros((1, 16), np.int64)
    one_code[0, 3] = 10
    assert layer_stats(uniform)[0]["perplexity"] == pytest.approx(16)
    assert layer_stats(uniform)[0]["usage"] == 1.0
    assert layer_stats(one_code)[0] == {"used": 1, "usage": 0.0625, "perplexity": 1.0, "entropy_bits": 0.0}
    counts = codebook_counts(np.array([[0, 1, 1], [2, 2, 2]]), 4)
    assert counts.tolist() == [[1, 2, 0, 0], [0, 0, 3, 0]]


def test_build_stats_sums_markers():
    m = {"shard": "a.tar", "tracks": 2, "seconds": 7200.0, "frames": 10, "codebook_counts": [[1, 1], [2, 0]],
         "skipped": [{"key": "k", "reason": "undecodable: x"}]}
    s = build_stats([m, {**m, "shard": "b.tar", "skipped": []}], pending=["c.tar"])
    assert (s["tracks"], s["hours"], s["frames"], s["tokens"], s["complete"]) == (4, 4.0, 20, 40, False)
    assert s["skipped"] == [{"shard": "a.tar", "key": "k", "reason": "undecodable: x"}]
    assert s["codebook"][0]["perplexity"] == pytest.approx(2.0)


@pytest.fixture(scope="module")
def tiny_stage(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tok-out")
    model = {"uri": "tiny", "load_uri": "tiny", "kind": "preset", "name": None, "version": "preset:tiny"}
    stage = ShardTokenizer(model, str(out), config_hash="0123456789abcdef", batch_size=4, batch_seconds=30,
                           torch_threads=2)
    stage.codec.configure(chunk_seconds=1.0, context_seconds=0.2, window_seconds=4.0)  # short tracks: small windows
    return stage, out


def test_shard_tokenizer_skips_corrupt_track_and_completes_the_shard(tiny_stage, tmp_path):
    stage, out = tiny_stage
    shard = tmp_path / "in" / "part-000000.tar"
    write_shard(shard, {"a": (1.0, 8000, 1, "wav"), "b": (2.3, 44100, 2, "flac"), "c": (0.5, 8000, 1, "ogg")},
                extra={"bad.flac": b"fLaC not really", "notes.txt": b"no audio here"})
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [True] and row["tracks"].tolist() == [3] and row["skipped"].tolist() == [2]
    marker = json.loads((out / "_done" / "part-000000.json").read_text())
    assert marker["keys"] == ["a", "b", "c"]
    assert {s["key"]: s["reason"].split(":")[0] for s in marker["skipped"]} == {"bad": "undecodable",
                                                                                "notes": "no_audio"}
    with tarfile.open(out / "part-000000.tar") as tar:
        names = tar.getnames()
        assert names == sorted(names) == ["a.codes.npy", "a.json", "b.codes.npy", "b.json", "c.codes.npy", "c.json"]
        b_codes = np.load(io.BytesIO(tar.extractfile("b.codes.npy").read()))
        b_meta = json.loads(tar.extractfile("b.json").read())
    assert b_codes.dtype == np.int16 and b_codes.shape == (8, 58)  # ceil(2.3 * 25)
    assert (b_meta["frames"], b_meta["sample_rate"], b_meta["channels"], b_meta["source_meta"]) == (
        58, 44100, 2, {"title": "b"})
    audio, sr = sf.read(io.BytesIO(encoded(music_clip(2.3, 44100, 2, seed=1), 44100, "FLAC")), dtype="float32")
    ref = stage.codec.encode(audio.T, sample_rate=sr)[0].numpy()
    np.testing.assert_array_equal(b_codes, ref)

    (wav,) = decode_shard(str(out / "part-000000.tar"), tmp_path / "decoded", keys=["b"], mlflow_uri="sqlite:///:memory:")
    back, back_rate = sf.read(wav)
    assert wav.name == "b.wav" and back_rate == 44100 and back.ndim == 1
    assert abs(len(back) - round(2.3 * 44100)) <= 1


def test_the_model_loads_and_encodes_on_one_thread_whichever_thread_calls_the_stage(tmp_path, monkeypatch):
    """Ray builds an actor on its main thread and Ray Data calls the UDF from a helper thread; libgomp keeps one
    OpenMP team per calling thread, so torch work on both would run two teams (see
    :mod:`pipelines.common.torch_thread`). The stage runs all of it on one thread of its own."""
    from pipelines.common import models

    threads: dict[str, set[int]] = {"load": set(), "encode": set()}
    load = models.load_pinned_codec

    def recording_load(*args, **kwargs):
        threads["load"].add(threading.get_ident())
        codec, device = load(*args, **kwargs)
        encode = codec.encode

        def recording_encode(*a, **k):
            threads["encode"].add(threading.get_ident())
            return encode(*a, **k)

        codec.encode = recording_encode
        return codec, device

    monkeypatch.setattr(models, "load_pinned_codec", recording_load)
    model = {"uri": "tiny", "load_uri": "tiny", "kind": "preset", "name": None, "version": "preset:tiny"}
    stage = ShardTokenizer(model, str(tmp_path / "out"), config_hash="0123456789abcdef", torch_threads=2)
    shard = tmp_path / "in" / "thread-000000.tar"
    write_shard(shard, {"a": (0.5, 8000, 1, "wav"), "b": (0.7, 8000, 1, "flac")})
    with ThreadPoolExecutor(max_workers=1) as ray_data_helper:
        caller = ray_data_helper.submit(threading.get_ident).result()
        row = ray_data_helper.submit(stage, {"shard": np.array([str(shard)])}).result()
    assert row["ok"].tolist() == [True] and row["tracks"].tolist() == [2]
    assert len(threads["load"]) == 1 and threads["encode"] == threads["load"]
    assert threading.get_ident() not in threads["load"] and caller not in threads["load"]


def test_shard_tokenizer_reports_unreadable_shard(tiny_stage, tmp_path):
    stage, out = tiny_stage
    shard = tmp_path / "broken-000000.tar"
    shard.write_bytes(b"this is not a tar file at all" * 40)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [False] and "broken-000000.tar" in row["error"][0]
    assert not (out / "_done" / "broken-000000.json").exists()


def test_encode_failure_skips_only_the_bad_track(tiny_stage, tmp_path, monkeypatch):
    stage, out = tiny_stage
    shard = tmp_path / "in" / "enc-000000.tar"
    write_shard(shard, {"ok": (0.5, 8000, 1, "wav"), "boom": (0.6, 8000, 1, "wav")})
    original = stage._encode_batch

    def flaky(batch):
        if any(t.key == "boom" for t in batch):
            raise RuntimeError("kaboom")
        original(batch)

    monkeypatch.setattr(stage, "_encode_batch", flaky)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [True] and row["tracks"].tolist() == [1]
    marker = json.loads((out / "_done" / "enc-000000.json").read_text())
    assert marker["keys"] == ["ok"] and marker["skipped"][0]["key"] == "boom"
    assert marker["skipped"][0]["reason"].startswith("encode_error: RuntimeError: kaboom")
    assert marker["seconds"] == pytest.approx(0.5)


def write_six_tracks_and_a_nan_one(shard) -> None:
    """Tracks t0..t5 (0.3-0.8 s) and ``nan``: a valid header over NaN samples, which only fails when decoded."""
    nan = io.BytesIO()
    sf.write(nan, np.full((4000, 1), np.nan, np.float32), 8000, format="WAV", subtype="FLOAT")
    write_shard(shard, {f"t{i}": (0.3 + 0.1 * i, 8000, 1, "wav") for i in range(6)},
                extra={"nan.wav": nan.getvalue()})


def test_with_decode_ahead_a_shard_is_decoded_a_batch_ahead_of_its_encode(tiny_stage, tmp_path, monkeypatch):
    """``decode_ahead``: tracks stay compressed until the encode batch before theirs: decoded audio never exceeds
    two batches (the one encoding, the next decoding in a thread meanwhile), and a track that only fails when
    decoded (NaN samples behind a valid header) is a reported skip, not a crash."""
    stage, out = tiny_stage
    shard = tmp_path / "in" / "lazy-000000.tar"
    write_six_tracks_and_a_nan_one(shard)
    tracks = []
    read, decode = stage.read_tracks, Track.decode

    def keep(url):
        result = read(url)
        tracks.extend(result[0])
        return result

    def watched(self):
        started.append(self.key)
        decode(self)
        live.append(sum(t.audio is not None for t in tracks))

    def next_batch_decoding(keys: set[str]) -> bool:
        return any(k not in keys and k not in encoded and k != "nan" for k in started)

    def encode_batch(batch):
        # While a batch encodes, the next one is already decoding in the prefetch thread.
        keys = {t.key for t in batch}
        deadline = time.monotonic() + 10
        while len(encoded) + len(keys) < 6 and not next_batch_decoding(keys) and time.monotonic() < deadline:
            time.sleep(0.01)
        overlapped.append(next_batch_decoding(keys))
        encoded.update(keys)
        encode(batch)

    live: list[int] = []
    started: list[str] = []
    encoded: set[str] = set()
    overlapped: list[bool] = []
    encode = stage._encode_batch
    monkeypatch.setattr(stage, "read_tracks", keep)
    monkeypatch.setattr(Track, "decode", watched)
    monkeypatch.setattr(stage, "_encode_batch", encode_batch)
    monkeypatch.setattr(stage, "batch_size", 2)
    monkeypatch.setattr(stage, "decode_ahead", True)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [True] and row["tracks"].tolist() == [6] and row["skipped"].tolist() == [1]
    # Batches by length: [t5 t4] [t3 nan] [t2 t1] [t0]; the NaN track never became audio; two batches at most live.
    assert len(live) == 6 and max(live) <= 4
    assert overlapped == [True, True, True, False]  # each batch but the last encoded while the next decoded
    marker = json.loads((out / "_done" / "lazy-000000.json").read_text())
    assert [(s["key"], s["reason"].split(":")[0]) for s in marker["skipped"]] == [("nan", "nonfinite")]
    assert marker["seconds"] == pytest.approx(sum(0.3 + 0.1 * i for i in range(6)))


def test_without_decode_ahead_each_batch_decodes_on_the_torch_thread_just_before_its_encode(tiny_stage, tmp_path,
                                                                                          monkeypatch):
    """The default (a CPU encode using every reserved core): no decode thread competes with the torch threads.
    Each batch decodes on the thread that encodes it, after the previous batch's encode, so one batch of decoded
    audio is live at a time; an undecodable track is still a reported skip."""
    stage, out = tiny_stage
    shard = tmp_path / "in" / "inline-000000.tar"
    write_six_tracks_and_a_nan_one(shard)
    events: list[tuple[str, str | tuple[str, ...], int]] = []
    tracks: list[Track] = []
    read, decode, encode = stage.read_tracks, Track.decode, stage._encode_batch
    live: list[int] = []

    def keep(url):
        result = read(url)
        tracks.extend(result[0])
        return result

    def watched(self):
        events.append(("decode", self.key, threading.get_ident()))
        decode(self)

    def encode_batch(batch):
        live.append(sum(t.audio is not None for t in tracks))
        events.append(("encode", tuple(t.key for t in batch), threading.get_ident()))
        encode(batch)

    monkeypatch.setattr(stage, "read_tracks", keep)
    monkeypatch.setattr(Track, "decode", watched)
    monkeypatch.setattr(stage, "_encode_batch", encode_batch)
    monkeypatch.setattr(stage, "batch_size", 2)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [True] and row["tracks"].tolist() == [6] and row["skipped"].tolist() == [1]
    # Batches by length: [t5 t4] [t3 nan] [t2 t1] [t0]: each decodes right before its own encode.
    assert [(kind, what) for kind, what, _ in events] == [
        ("decode", "t5"), ("decode", "t4"), ("encode", ("t5", "t4")),
        ("decode", "t3"), ("decode", "nan"), ("encode", ("t3",)),
        ("decode", "t2"), ("decode", "t1"), ("encode", ("t2", "t1")),
        ("decode", "t0"), ("encode", ("t0",))]
    assert len({ident for *_, ident in events}) == 1  # all on the torch thread
    assert live == [2, 1, 2, 1]  # only the batch being encoded is decoded
    marker = json.loads((out / "_done" / "inline-000000.json").read_text())
    assert [(s["key"], s["reason"].split(":")[0]) for s in marker["skipped"]] == [("nan", "nonfinite")]


def test_plan_refuses_output_from_another_config(tmp_path):
    write_shard(tmp_path / "in" / "p-000000.tar", {"a": (0.2, 8000, 1, "wav")})
    write_shard(tmp_path / "in" / "p-000001.tar", {"b": (0.2, 8000, 1, "wav")})
    overrides = ["model=tiny", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
                 f"tracking.uri=sqlite:///{tmp_path / 'm.db'}"]
    plan = plan_tokenize(load_tokenize_config(None, overrides))
    assert [tio.shard_name(s) for s in plan.todo] == ["p-000000.tar", "p-000001.tar"] and plan.done == []
    tio.write_atomic(tio.done_url(str(tmp_path / "out"), "p-000000.tar"),
                     tio.json_bytes({"shard": "p-000000.tar", "config_hash": plan.config_hash}))
    assert [tio.shard_name(s) for s in plan_tokenize(load_tokenize_config(None, overrides)).todo] == ["p-000001.tar"]
    with pytest.raises(OutputMismatchError, match="p-000000.tar"):
        plan_tokenize(load_tokenize_config(None, [*overrides, "n_q=4"]))
    assert len(plan_tokenize(load_tokenize_config(None, [*overrides, "n_q=4", "overwrite=true"])).todo) == 2


def test_shard_where_every_track_fails_to_encode_is_not_marked_done(tiny_stage, tmp_path, monkeypatch):
    stage, out = tiny_stage
    shard = tmp_path / "in" / "allbad-000000.tar"
    write_shard(shard, {"x": (0.2, 8000, 1, "wav"), "y": (0.2, 8000, 1, "wav")})

    def broken(batch):
        raise ValueError("n_q must be in 1..8, got 9")

    monkeypatch.setattr(stage, "_encode_batch", broken)
    row = stage({"shard": np.array([str(shard)])})
    assert row["ok"].tolist() == [False] and "every track failed to encode" in row["error"][0]
    assert not (out / "_done" / "allbad-000000.json").exists() and not (out / "allbad-000000.tar").exists()

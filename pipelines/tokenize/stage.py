"""Ray Data stage that tokenizes whole WebDataset shards with the codec (MuQ + encoder + RVQ).

One call = one input shard: read its tracks (kept compressed), sort them by length from their headers,
decode and encode them whole in length-batched ``Codec.encode`` calls (fixed-grid windowed long-track
encoding; with ``decode_ahead`` the next batch decodes in a thread while one encodes, so at most two batches of
decoded audio are in memory, otherwise one), then write the output
file (:mod:`pipelines.tokenize.writers`: a deterministic tar of ``KEY.codes.npy`` int16 [n_q, T] + ``KEY.json``,
or a Parquet file with one row per track) and, last, the shard's done marker. A shard is therefore either
done (marker present, output complete) or redone by the next
run; nothing is appended, so no track is duplicated or lost.

Used as ``ds.map_batches(ShardTokenizer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=N),
fn_constructor_kwargs=...)`` on a dataset of ``{"shard": url}`` rows.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.common import shard_io as tio
from pipelines.common.audio_decode import DUPLICATE_KEY, Skip, decode_bytes, find_audio, open_audio
from pipelines.common.storage import StorageConfig
from pipelines.common.torch_thread import TorchThread
from pipelines.tokenize.writers import CODES_SUFFIX, MODEL_KEYS, make_writer  # noqa: F401  (CODES_SUFFIX re-exported)

ROW_KEYS = ("shard", "ok", "tracks", "seconds", "frames", "skipped", "error")


class SkipTrack(Exception):
    """A track that cannot be tokenized; the message is the reason recorded in stats."""


@dataclass
class Track:
    """An input track, kept encoded until the encode batch that needs it (:meth:`decode`).

    Until then ``sample_rate``, ``num_samples`` and ``channels`` are the header's (enough to batch by
    length); decoding replaces them with the decoded facts. ``audio`` (float32 [C, N]) exists only from the
    previous batch's encode until its own batch is encoded, so a shard's memory is its compressed bytes plus
    at most two batches of decoded audio.
    """

    key: str
    data: bytes = field(repr=False)
    sample_rate: int
    num_samples: int
    channels: int
    suffix: str
    source_meta: dict[str, Any] | None = None
    audio: np.ndarray | None = field(default=None, repr=False)
    codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate

    def decode(self) -> None:
        """Decode ``data`` into ``audio`` (and drop the bytes).

        Raises:
            SkipTrack: undecodable, truncated to nothing or non-finite audio.
        """
        decoded = decode_bytes(self.data)
        if isinstance(decoded, Skip):
            raise SkipTrack(decoded.message)
        self.audio, self.sample_rate = decoded
        self.channels, self.num_samples = (int(n) for n in self.audio.shape)
        self.data = b""


def probe_track(sample: dict[str, Any]) -> Track:
    """A WebDataset sample's audio member (any suffix :mod:`pipelines.common.audio_decode` reads), header checked,
    not decoded yet.

    Raises:
        SkipTrack: no audio member, empty or an unreadable header.
    """
    found = find_audio(sample)
    opened = found if isinstance(found, Skip) else open_audio(found[1])
    if isinstance(opened, Skip):
        raise SkipTrack(opened.message)
    f, info = opened
    f.close()
    meta = None
    if isinstance(sample.get("json"), bytes):
        try:
            meta = json.loads(sample["json"])
        except (ValueError, UnicodeDecodeError):
            meta = None
    return Track(key=sample["__key__"], data=found[1], sample_rate=info.sample_rate, num_samples=info.frames,
                 channels=info.channels, suffix=found[0], source_meta=meta if isinstance(meta, dict) else None)


def length_batches(tracks: list[Track], batch_size: int, batch_seconds: float) -> list[list[Track]]:
    """Group tracks into encode batches: same sample rate (one ``Codec.encode`` call takes one rate),
    sorted longest first, at most ``batch_size`` tracks and ``batch_seconds`` of padded audio
    (``len(batch) * longest``) per batch; a track longer than ``batch_seconds`` goes alone.
    """
    groups: dict[int, list[Track]] = {}
    for t in tracks:
        groups.setdefault(t.sample_rate, []).append(t)
    batches: list[list[Track]] = []
    for _, group in sorted(groups.items()):
        group = sorted(group, key=lambda t: (-t.num_samples, t.key))
        batch: list[Track] = []
        for t in group:
            longest = batch[0].seconds if batch else t.seconds
            if batch and (len(batch) >= batch_size or (len(batch) + 1) * longest > batch_seconds):
                batches.append(batch)
                batch = []
            batch.append(t)
        if batch:
            batches.append(batch)
    return batches


def decode_batch(batch: list[Track]) -> tuple[list[Track], list[dict[str, str]]]:
    """Decode every track of an encode batch: (the decoded tracks, ``{"key", "reason"}`` of the others)."""
    ready, undecodable = [], []
    for t in batch:
        try:
            t.decode()
            ready.append(t)
        except SkipTrack as e:
            undecodable.append({"key": t.key, "reason": str(e)})
    return ready, undecodable


def codebook_counts(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Code histogram per layer. codes: [n_q, T] ints -> int64 [n_q, codebook_size]."""
    return np.stack([np.bincount(c.astype(np.int64), minlength=codebook_size)[:codebook_size] for c in codes])


class ShardTokenizer:
    """Actor-pool stage: one whole input shard per row -> output shard + done marker.

    Args:
        model: :meth:`pipelines.common.models.ModelRef.to_json` of the pinned model.
        output: output dir/prefix (local or ``s3://``).
        config_hash: recorded in every track's json and the done marker.
        n_q: codebooks to keep (None = all).
        batch_size: max tracks per encode call.
        batch_seconds: max padded audio seconds per encode call.
        device: "auto", "cpu" or "cuda".
        torch_threads: intra-op threads (None leaves torch's default).
        mlflow_uri: tracking/registry URI for ``models:/`` and ``runs:/`` loads.
        storage: resolved ``s3://`` settings (see :meth:`pipelines.common.storage.StorageConfig.resolved`).
        output_format: "tar" or "parquet" (:mod:`pipelines.tokenize.writers`).
        decode_ahead: decode the next batch in a thread while one encodes. Worth it only where the encode
            leaves a CPU free (a GPU encodes, or fewer torch threads than reserved CPUs): otherwise the decode
            thread preempts a torch thread and the whole OpenMP team waits for it at every barrier. On 2 cores
            with 2 torch threads, 13.4 min of real music, 5 alternating pairs of fresh processes: 40.6-45.8
            audio-s/s with the thread, 44.7-48.8 without (faster in 4 of 5 pairs, 7 % fewer CPU-seconds).
    """

    def __init__(self, model: dict[str, Any], output: str, config_hash: str, n_q: int | None = None,
                 batch_size: int = 8, batch_seconds: float = 600.0, device: str = "auto",
                 torch_threads: int | None = None, mlflow_uri: str | None = None,
                 storage: StorageConfig | None = None, output_format: str = "tar", decode_ahead: bool = False):
        from pipelines.common.models import load_pinned_codec

        self.torch_thread = TorchThread()  # the model loads, and every shard encodes, on this one thread
        self.codec, self.device = self.torch_thread.run(load_pinned_codec, model, device, torch_threads, mlflow_uri)
        self.model = model
        self.output = output
        self.config_hash = config_hash
        self.n_q = n_q
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.storage = storage
        self.writer = make_writer(output_format)
        self.decode_ahead = decode_ahead
        self.codebook_size = self.codec.codebook_size
        self.frame_rate = int(round(self.codec.frame_rate))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self.torch_thread.run(self.tokenize_shard, str(url)) for url in batch["shard"]]
        return {k: np.array([r[k] for r in rows]) for k in ROW_KEYS}

    def read_tracks(self, url: str) -> tuple[list[Track], list[dict[str, str]]]:
        """Tracks of a shard (compressed, see :class:`Track`) and the skipped ones ``[{"key", "reason"}]``.

        Raises:
            OSError, tarfile.TarError: the shard itself is unreadable (the whole shard is retried later).
        """
        tracks: dict[str, Track] = {}
        skipped: list[dict[str, str]] = []
        truncated: list[dict[str, str]] = []  # a tar cut short: the broken tail is a reported skip
        with tio.open_read(url, self.storage) as f:
            for sample in tio.iter_samples(f, truncated):
                key = sample["__key__"]
                if key.startswith("/") or ".." in key.split("/"):  # would be a tar-slip member in the output
                    skipped.append({"key": key, "reason": "unsafe_key: absolute or '..' member path"})
                    continue
                if key in tracks or any(s["key"] == key for s in skipped):
                    skipped.append({"key": key, "reason": f"{DUPLICATE_KEY}: key repeated in shard"})
                    continue
                try:
                    tracks[key] = probe_track(sample)
                except SkipTrack as e:
                    skipped.append({"key": key, "reason": str(e)})
        return list(tracks.values()), skipped + truncated

    def encode(self, tracks: list[Track]) -> list[dict[str, str]]:
        """Decode and fill ``track.codes`` (int16 [n_q, T]) for every track, batching by length; with
        ``decode_ahead`` each batch is decoded (in a thread) while the previous one encodes.

        A track that does not decode is skipped. A batch whose encode fails is retried track by track; a
        track that still fails is skipped too. Skipped tracks are dropped from ``tracks`` and returned as
        ``{"key", "reason"}``.

        Raises:
            MemoryError, torch.OutOfMemoryError: not the track's fault; the shard is retried by a rerun.
            RuntimeError: every decodable track failed to encode (a model/config problem, not bad tracks).
        """
        import torch

        fatal = (MemoryError, torch.OutOfMemoryError)
        undecodable, failed = [], []
        batches = length_batches(tracks, self.batch_size, self.batch_seconds)
        # decode_ahead: the next batch decodes in a thread while this one encodes (libsndfile and torch release
        # the GIL); otherwise each batch decodes on this thread just before its encode.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") if self.decode_ahead else nullcontext() as ahead:
            pending = ahead.submit(decode_batch, batches[0]) if ahead and batches else None
            for i, batch in enumerate(batches):
                ready, bad = pending.result() if ahead else decode_batch(batch)
                undecodable += bad
                pending = ahead.submit(decode_batch, batches[i + 1]) if ahead and i + 1 < len(batches) else None
                try:
                    if ready:
                        self._encode_batch(ready)
                except fatal:
                    raise
                except Exception:  # noqa: BLE001  (isolate the bad track below)
                    for t in ready:
                        try:
                            self._encode_batch([t])
                        except fatal:
                            raise
                        except Exception as e:  # noqa: BLE001
                            failed.append({"key": t.key, "reason": f"encode_error: {type(e).__name__}: {e}"[:300]})
                finally:
                    for t in batch:
                        t.audio = None  # free this batch's audio; only the next one (decode_ahead) stays decoded
        if failed and len(failed) == len(tracks) - len(undecodable):
            raise RuntimeError(f"every track failed to encode, e.g. {failed[0]['reason']}")
        bad = {s["key"] for s in undecodable + failed}
        tracks[:] = [t for t in tracks if t.key not in bad]
        return undecodable + failed

    def _encode_batch(self, batch: list[Track]) -> None:
        import torch

        with torch.inference_mode():
            codes = self.codec.encode([torch.from_numpy(t.audio) for t in batch], sample_rate=batch[0].sample_rate,
                                      n_q=self.n_q)
        for t, c in zip(batch, codes, strict=True):
            n = self.codec.num_frames(t.num_samples, t.sample_rate)  # = ceil(duration * 25)
            t.codes = np.ascontiguousarray(c[:, :n].numpy().astype(np.int16))

    def tokenize_shard(self, url: str) -> dict[str, Any]:
        """Tokenize one input shard; returns a progress row (see ``ROW_KEYS``)."""
        source_name = tio.shard_name(url)
        name = self.writer.file_name(source_name)
        try:
            tracks, skipped = self.read_tracks(url)
        except Exception as e:  # noqa: BLE001  (an unreadable shard must not kill the job)
            return {"shard": name, "ok": False, "tracks": 0, "seconds": 0.0, "frames": 0, "skipped": 0,
                    "error": f"cannot read {url}: {type(e).__name__}: {e}"}
        try:
            skipped += self.encode(tracks)
        except Exception as e:  # noqa: BLE001  (shard stays not-done; a rerun retries it)
            return {"shard": name, "ok": False, "tracks": 0, "seconds": 0.0, "frames": 0, "skipped": 0,
                    "error": f"encode failed for {url}: {type(e).__name__}: {e}"}
        meta = {t.key: (t.seconds, t.num_samples, t.sample_rate, t.channels) for t in tracks}  # decoded facts
        written: list[tuple[dict[str, Any], np.ndarray]] = []
        counts = None
        frames = 0
        for t in sorted(tracks, key=lambda t: t.key):
            seconds, num_samples, sr, channels = meta[t.key]
            info = {
                "key": t.key,
                "duration": seconds,
                "frames": int(t.codes.shape[1]),
                "n_q": int(t.codes.shape[0]),
                "frame_rate": self.frame_rate,
                "sample_rate": sr,
                "channels": channels,
                "num_samples": num_samples,
                "source_format": t.suffix,
                "source_shard": source_name,
                "model": {k: self.model[k] for k in MODEL_KEYS},
                "config_hash": self.config_hash,
            }
            if t.source_meta is not None:
                info["source_meta"] = t.source_meta
            written.append((info, t.codes))
            c = codebook_counts(t.codes, self.codebook_size)
            counts = c if counts is None else counts + c
            frames += int(t.codes.shape[1])
        blob = self.writer.encode(written)
        tio.write_atomic(tio.join(self.output, name), blob, self.storage)
        seconds = float(sum(meta[t.key][0] for t in tracks))
        marker = {
            "shard": name,
            "source": url,
            "config_hash": self.config_hash,
            "model": {k: self.model[k] for k in MODEL_KEYS},
            "tracks": len(tracks),
            "keys": sorted(t.key for t in tracks),
            "seconds": seconds,
            "frames": frames,
            "n_q": int(tracks[0].codes.shape[0]) if tracks else self.n_q,
            "codebook_size": self.codebook_size,
            "codebook_counts": counts.tolist() if counts is not None else [],
            "skipped": sorted(skipped, key=lambda s: (s["key"], s["reason"])),
            "bytes": len(blob),
            "sha256": hashlib.sha256(blob).hexdigest(),
        }
        tio.write_atomic(tio.done_url(self.output, name), tio.json_bytes(marker), self.storage)
        return {"shard": name, "ok": True, "tracks": len(tracks), "seconds": seconds, "frames": frames,
                "skipped": len(skipped), "error": ""}


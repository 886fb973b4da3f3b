"""Training data pipeline on Ray Data: WebDataset shards -> 24 kHz segments -> MuQ features.

Stages (CPU and GPU work kept apart, so each scales on its own resources)::

    read_webdataset (raw bytes, repeated keys renamed)
    -> ShardSegments: one fused CPU task per read block (a shard's samples, up to 512): normalize_sample
       (key + audio bytes) -> split filter (key hash) -> SegmentStage (decode window, mono, resample, crop,
       skip rows) -> drop skip rows; Ray fuses it into the read task (same resources, one unsplit read task
       per shard), so a shard is read and cut in one task and only the segments cross the object store
    -> SemanticStage (actor pool, MuQ loaded once per actor, never fused with the CPU stage) -> {audio, semantic}

Skipped samples never raise: they become one row with a non-empty ``skip_reason`` (and a log line with
key and reason), so exact counts are a :func:`skip_counts` away.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np

from codec.allocator import malloc_env
from codec.config import TeacherConfig
from pipelines.common.audio_decode import DUPLICATE_KEY, TRUNCATED, Skip, find_audio
from pipelines.common.config import merge
from pipelines.common.imports import import_uninterrupted
from pipelines.common.shard_io import list_shards
from pipelines.common.storage import (
    is_s3,
    pyarrow_filesystem,
    strip_scheme,
)
from pipelines.common.torch_thread import TorchThread
from pipelines.data.config import DataConfig
from pipelines.data.segments import SegmentSpec, cut_segments, key_fraction, segment_samples

logger = logging.getLogger(__name__)

DUP_MARK = "#dup"
SPLITS = ("train", "val")


class RenameRepeatedKeys:
    """``filerename`` for ``read_webdataset``: a key seen again in the same read task becomes ``KEY#dupN``.

    Ray's reader raises on a repeated member name or a non-adjacent repeated key; renaming the later
    occurrences keeps the read alive, and :func:`normalize_sample` turns them into ``duplicate_key`` skips
    (the first occurrence is kept).
    """

    def __init__(self) -> None:
        self._seen: Counter[str] = Counter()
        self._current: str | None = None
        self._renamed = ""
        self._suffixes: set[str] = set()

    def __call__(self, fname: str) -> str:
        folder, _, base = fname.rpartition("/")
        if "." not in base:
            return fname
        stem, suffix = base.split(".", 1)
        prefix = f"{folder}/{stem}" if folder else stem
        if prefix != self._current or suffix in self._suffixes:  # a new sample starts
            n = self._seen[prefix]
            self._seen[prefix] += 1
            self._current, self._suffixes = prefix, set()
            self._renamed = prefix if n == 0 else f"{prefix}{DUP_MARK}{n}"
        self._suffixes.add(suffix)
        return f"{self._renamed}.{suffix}"


def normalize_sample(row: dict[str, Any]) -> dict[str, Any]:
    """Row stage: a raw WebDataset sample (any members) -> a fixed schema.

    Returns:
        ``{key, url, audio (bytes, may be empty), skip_reason ("" if fine), detail}``.
    """
    key = str(row["__key__"])
    out = {"key": key, "url": str(row.get("__url__") or ""), "audio": b"", "skip_reason": "", "detail": ""}
    if DUP_MARK in key:
        out.update(skip_reason=DUPLICATE_KEY, detail=f"repeats {key.split(DUP_MARK)[0]}")
        return out
    if key.split(DUP_MARK)[0] == TRUNCATED_TAIL and row.get(_TRUNCATED_SUFFIX):
        out.update(skip_reason=TRUNCATED, detail=bytes(row[_TRUNCATED_SUFFIX]).decode())
        return out
    found = find_audio(row)
    if isinstance(found, Skip):
        out.update(skip_reason=found.reason, detail=found.detail)
    else:
        out["audio"] = found[1]
    return out


class SplitFilter:
    """Keep rows of one split: ``val`` = keys whose hash fraction is below ``val_fraction``."""

    def __init__(self, split: str | None, val_fraction: float):
        if split not in (*SPLITS, None):
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        self.split, self.val_fraction = split, val_fraction

    def __call__(self, row: dict[str, Any]) -> bool:
        if self.split is None:
            return True
        is_val = key_fraction(str(row["key"])) < self.val_fraction
        return is_val == (self.split == "val")


class SegmentStage:
    """CPU stage: encoded tracks -> random fixed-length 24 kHz mono segments (or one skip row per track).

    Args:
        spec: segment geometry, thresholds and seed.
        epoch: mixed into the per-key seed.
        torch_threads: intra-op threads for resampling (1, as in DataLoader workers: parallelism comes
            from the tasks).
    """

    def __init__(self, spec: SegmentSpec, epoch: int = 0, torch_threads: int = 1):
        self.spec, self.epoch, self.torch_threads = spec, epoch, torch_threads

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        torch = import_uninterrupted("torch")  # a cancelled task must not leave torch half imported
        import_uninterrupted("torchaudio.functional")  # the resampler's, same reason
        if torch.get_num_threads() != self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        L = self.spec.length
        keys, starts, audio, reasons, details = [], [], [], [], []
        for key, data, reason, detail in zip(batch["key"], batch["audio"], batch["skip_reason"], batch["detail"],
                                             strict=True):
            key = str(key)
            if not reason:
                result = cut_segments(bytes(data), key, self.spec, self.epoch)
                if isinstance(result, Skip):
                    reason, detail = result.reason, result.detail
                else:
                    for start, seg in result:
                        keys.append(key)
                        starts.append(start)
                        audio.append(seg[None])
                        reasons.append("")
                        details.append("")
                    continue
            logger.warning("skip %s: %s (%s)", key, reason, detail)
            keys.append(key)
            starts.append(-1)
            audio.append(np.zeros((1, L), dtype=np.float32))
            reasons.append(str(reason))
            details.append(str(detail))
        return {"key": np.array(keys, dtype=object), "start": np.array(starts, dtype=np.int64),
                "audio": np.stack(audio) if audio else np.zeros((0, 1, L), np.float32),
                "skip_reason": np.array(reasons, dtype=object), "detail": np.array(details, dtype=object)}


def drop_skipped(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Batch stage: keep only good segment rows."""
    keep = np.array([not r for r in batch["skip_reason"]], dtype=bool)
    return {k: v[keep] for k, v in batch.items()}


class ShardSegments:
    """The fused CPU stage over one read block (raw WebDataset samples of one shard): normalize, split
    filter, segment, and (unless ``keep_skipped``) drop the skip rows, in one task.

    Same rows, order and skip logging as the separate stages ``normalize_sample -> SplitFilter ->
    SegmentStage -> drop_skipped``.
    """

    def __init__(self, spec: SegmentSpec, split: str | None, val_fraction: float, epoch: int = 0,
                 torch_threads: int = 1, keep_skipped: bool = False):
        self.split_filter = SplitFilter(split, val_fraction)
        self.segment = SegmentStage(spec, epoch, torch_threads)
        self.keep_skipped = keep_skipped

    def __call__(self, block) -> dict[str, Any]:
        rows = [normalize_sample(r) for r in block.to_pylist()]  # a pyarrow table: rows as ``ds.map`` sees them
        rows = [r for r in rows if self.split_filter(r)]
        batch = {name: np.array([r[name] for r in rows], dtype=object)
                 for name in ("key", "audio", "skip_reason", "detail")}
        out = self.segment(batch)
        return out if self.keep_skipped else drop_skipped(out)


def build_teacher(teacher: TeacherConfig | dict[str, Any], checkpoint: str | None = None):
    """The frozen MuQ of the codec's teacher config, built by the codec's one builder
    (``codec.builders.build_teacher``); ``checkpoint``'s ``teacher.safetensors`` is loaded into it."""
    from codec.builders import build_teacher as build
    from codec.checkpoint import TEACHER_FILE, resolve_checkpoint_dir

    weights = resolve_checkpoint_dir(checkpoint) / TEACHER_FILE if checkpoint else None
    return build(merge(None, {"teacher": merge(TeacherConfig, teacher)}), weights)


class SemanticStage:
    """GPU stage (actor pool): adds ``semantic`` MuQ features [B, L/960, D] fp32 to each batch.

    Args:
        teacher: the codec's teacher config (or its dict); the model is loaded once per actor.
        checkpoint: checkpoint whose ``teacher.safetensors`` the teacher loads (``DataConfig.teacher_checkpoint``).
        torch_threads: intra-op threads of this actor (keep small on shared CPUs).
    """

    def __init__(self, teacher: TeacherConfig | dict[str, Any], checkpoint: str | None = None, torch_threads: int = 1):
        self.torch_thread = TorchThread()  # the teacher loads, and every batch runs, on this one thread
        self.device, self.teacher = self.torch_thread.run(self._load, teacher, checkpoint, torch_threads)

    @staticmethod
    def _load(teacher: TeacherConfig | dict[str, Any], checkpoint: str | None, torch_threads: int) -> tuple[str, Any]:
        import torch

        torch.set_num_threads(max(1, torch_threads))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        return device, build_teacher(teacher, checkpoint).to(device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.torch_thread.run(self._features, batch)

    def _features(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        audio = torch.from_numpy(np.ascontiguousarray(batch["audio"], dtype=np.float32)).to(self.device)
        features = self.teacher(audio)  # [B, N/960, D]
        batch["semantic"] = features.float().cpu().numpy()
        return batch


def resolve_shards(cfg: DataConfig) -> list[str]:
    """Shard paths of the config (files, globs, or folders whose ``manifest.json`` lists the shards)."""
    return list_shards(list(cfg.shards), cfg.storage)


TRUNCATED_TAIL = "__truncated_tail__"  # key of the row that reports a tar cut short mid-member
_TRUNCATED_SUFFIX = "truncated_tar"


def _tolerant_tar_files(stream, filerename) -> Any:
    """Ray's tar member iterator, except that a tar ending mid-member (or mid-header) ends the iteration
    with one ``__truncated_tail__.truncated_tar`` member (the reason) instead of failing the read task:
    the complete members before the cut are kept and the broken tail becomes a reported skip."""
    import tarfile

    from ray.data._internal.datasource.webdataset_datasource import _tar_file_iterator

    last = "start"
    try:
        for f in _tar_file_iterator(stream, filerename=filerename):
            last = f["fname"]
            yield f
    except (tarfile.ReadError, EOFError) as e:
        reason = f"tar ends after member {last} ({type(e).__name__}: {e})"
        yield {"fname": f"{TRUNCATED_TAIL}.{_TRUNCATED_SUFFIX}", "data": reason.encode()}


def _webdataset_datasource(paths: list[str], **kwargs: Any) -> Any:
    """Ray's ``WebDatasetDatasource`` (undecoded samples) reading tars with :func:`_tolerant_tar_files`."""
    import pandas as pd
    from ray.data._internal.datasource.webdataset_datasource import (
        WEBDATASET_READ_CHUNK_SIZE,
        WebDatasetDatasource,
        _group_by_keys,
    )
    from ray.data._internal.util import iterate_with_retry

    class TolerantWebDatasetDatasource(WebDatasetDatasource):
        def _read_stream(self, stream, path):
            files = iterate_with_retry(lambda: _tolerant_tar_files(stream, self.filerename), "iterate tar file",
                                       match=self._data_context.retried_io_errors)
            rows = []
            for sample in _group_by_keys(files, meta={"__url__": path}, suffixes=self.suffixes):
                rows.append(sample)
                if len(rows) >= WEBDATASET_READ_CHUNK_SIZE:
                    yield pd.DataFrame.from_records(rows)
                    rows = []
            if rows:
                yield pd.DataFrame.from_records(rows)

    return TolerantWebDatasetDatasource(paths, decoder=None, **kwargs)


def read_shards(paths: list[str], cfg: DataConfig, num_cpus: float | None = None):
    """WebDataset read over shard paths, undecoded, with repeated keys renamed and a truncated tar's
    broken tail reported as a ``truncated`` skip row (see :func:`_tolerant_tar_files`).
    ``num_cpus``: of each read task (``cfg.cpu.read_num_cpus`` by default)."""
    import ray

    s3 = is_s3(paths[0])
    return ray.data.read_datasource(_webdataset_datasource(
        [strip_scheme(p) for p in paths] if s3 else paths,
        filesystem=pyarrow_filesystem(paths[0], cfg.storage.resolved()), filerename=RenameRepeatedKeys()),
        num_cpus=cfg.cpu.read_num_cpus if num_cpus is None else num_cpus,
        override_num_blocks=len(paths))  # one read task per shard, its blocks not split (splitting stops fusion)


def segment_spec(cfg: DataConfig) -> SegmentSpec:
    """The :class:`SegmentSpec` of a data config (length rounded down to a multiple of 960)."""
    return SegmentSpec(length=segment_samples(cfg.segment_seconds, cfg.sample_rate), sample_rate=cfg.sample_rate,
                       per_track=cfg.segments_per_track, silence_db=cfg.silence_db, max_tries=cfg.max_tries,
                       seed=cfg.seed)


def build_segment_dataset(cfg: DataConfig, split: str | None = "train", epoch: int = 0,
                          keep_skipped: bool = False):
    """The CPU part: shards -> rows ``{key, start, audio [1, L], skip_reason, detail}``.

    Args:
        cfg: data config.
        split: ``"train"``, ``"val"`` or ``None`` (all tracks).
        epoch: changes the random segment offsets.
        keep_skipped: keep the skip rows (one per skipped track, ``start == -1``) for accounting.
    """
    ds = read_shards(resolve_shards(cfg), cfg, num_cpus=cfg.cpu.num_cpus)  # same resources: fused below
    ds.context.op_resource_reservation_enabled = cfg.resource_reservation  # this pipeline's context copy
    return ds.map_batches(ShardSegments(segment_spec(cfg), split, cfg.val_fraction, epoch, cfg.cpu.torch_threads,
                                        keep_skipped),
                          batch_size=None, batch_format="pyarrow", zero_copy_batch=True, num_cpus=cfg.cpu.num_cpus)


def add_semantic(ds, cfg: DataConfig):
    """Append the MuQ actor-pool stage (``ActorPoolStrategy(size=semantic.actors)``)."""
    import ray

    sem = cfg.semantic
    return ds.map_batches(
        SemanticStage, fn_constructor_kwargs={"teacher": cfg.teacher, "checkpoint": cfg.teacher_checkpoint,
                               "torch_threads": sem.torch_threads},
        compute=ray.data.ActorPoolStrategy(size=sem.actors), batch_size=sem.batch_size, batch_format="numpy",
        num_gpus=sem.num_gpus, num_cpus=sem.num_cpus,
        # OpenMP sized to the actor's threads. It also keeps the stages apart: Ray Data fuses a task stage into
        # the actor stage after it when their remote args are equal (as with the CPU defaults), and decoding
        # would then run inside the MuQ actors; a runtime env of its own makes the args differ.
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(1, sem.torch_threads)),
                                  **(malloc_env() if sem.tune_malloc else {})}})


def skip_counts(rows: list[dict[str, Any]] | Any) -> tuple[set[str], Counter[str]]:
    """Good keys and skip counts by reason from segment rows (a list of rows or a dataset with skip rows).

    Returns:
        ``(keys with at least one good segment, Counter(reason -> skipped tracks))``.
    """
    if not isinstance(rows, list):
        rows = rows.select_columns(["key", "skip_reason"]).take_all()
    good = {str(r["key"]) for r in rows if not r["skip_reason"]}
    return good, Counter(str(r["skip_reason"]) for r in rows if r["skip_reason"])

"""Typed configs of the corpus preparation job and the training data pipeline.

YAML -> :func:`load_prepare_config` / :func:`load_data_config` (structured omegaconf merge plus
``key=value`` overrides) -> dataclasses. Unknown keys and bad values fail here, naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipelines.storage import StorageConfig

T = TypeVar("T")


@dataclass
class PrepareConfig:
    """``jobs/prepare.py``: music files -> WebDataset shards.

    Attributes:
        inputs: folders (searched recursively), audio files or ``.txt`` file lists (one path per line),
            local or ``s3://``.
        output: output folder or ``s3://bucket/prefix``.
        shard_prefix: shards are ``{output}/{shard_prefix}-000000.tar`` ...
        max_samples_per_shard: roll to a new shard after this many samples.
        max_bytes_per_shard: roll before a shard exceeds this many bytes.
        extensions: audio file suffixes picked up from folders.
        num_cpus: CPUs per transcoding task (fractional is fine).
        batch_size: files per transcoding task call.
        progress: show a progress bar.
        storage: S3 endpoint / credentials (empty = AWS environment variables).
    """

    inputs: list[str] = field(default_factory=list)
    output: str = "outputs/shards"
    shard_prefix: str = "shard"
    max_samples_per_shard: int = 1000
    max_bytes_per_shard: int = 256 * 2**20
    extensions: list[str] = field(default_factory=lambda: ["wav", "flac", "mp3", "ogg", "oga", "opus"])
    num_cpus: float = 1.0
    batch_size: int = 4
    progress: bool = True
    storage: StorageConfig = field(default_factory=StorageConfig)


@dataclass
class TeacherSpec:
    """Which MuQ the semantic stage loads.

    Attributes:
        model_id: published MuQ (Hub id or local dir), used when ``random`` is empty.
        layer: hidden state returned (-1 = last).
        random: kwargs of ``MuQTeacher.random`` (tests / smoke configs); overrides ``model_id``.
        checkpoint: a codec checkpoint directory or MLflow URI whose own teacher to use (its config and
            ``teacher.safetensors``, e.g. an imported muq-xcodec release); overrides the fields above.
            A local path must be readable on every node that runs the semantic stage.
    """

    model_id: str = "OpenMuQ/MuQ-large-msd-iter"
    layer: int = -1
    random: dict[str, Any] | None = None
    checkpoint: str | None = None


@dataclass
class SemanticStageConfig:
    """The MuQ actor pool (``map_batches`` with ``ActorPoolStrategy(size=actors)``)."""

    enabled: bool = True
    actors: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 0.5
    batch_size: int = 8
    torch_threads: int = 1


@dataclass
class CpuStageConfig:
    """The decode + resample + crop tasks."""

    num_cpus: float = 0.5
    batch_size: int = 4
    read_num_cpus: float = 0.25
    torch_threads: int = 1


@dataclass
class DataConfig:
    """Training data pipeline (``pipelines.data.build_training_dataset``).

    Attributes:
        shards: shard files, folders (a ``manifest.json`` there lists the shards) or globs.
        sample_rate: model rate (24 kHz).
        segment_seconds: segment length; rounded down to a multiple of 960 samples.
        segments_per_track: at most this many random segments per track and epoch.
        silence_db: segments quieter than this (RMS dBFS) are redrawn.
        max_tries: draws per wanted segment.
        seed: segment-offset seed.
        val_fraction: share of tracks (by key hash) in the validation split.
        cpu: decode stage resources.
        semantic: MuQ stage resources.
        teacher: which MuQ.
        cache_dir: feature cache folder (``pipelines.feature_cache``); used when it matches this config.
        storage: S3 endpoint / credentials.
    """

    shards: list[str] = field(default_factory=list)
    sample_rate: int = 24000
    segment_seconds: float = 5.0
    segments_per_track: int = 4
    silence_db: float = -60.0
    max_tries: int = 3
    seed: int = 0
    val_fraction: float = 0.05
    cpu: CpuStageConfig = field(default_factory=CpuStageConfig)
    semantic: SemanticStageConfig = field(default_factory=SemanticStageConfig)
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    cache_dir: str | None = None
    storage: StorageConfig = field(default_factory=StorageConfig)


class DataConfigError(ValueError):
    """A bad prepare / data config; the message names the key."""


def _load(schema: type[T], source: str | dict | None, overrides: list[str] | None) -> T:
    try:
        cfg = OmegaConf.structured(schema)
        if isinstance(source, str):
            cfg = OmegaConf.merge(cfg, OmegaConf.load(source))
        elif source is not None:
            cfg = OmegaConf.merge(cfg, OmegaConf.create(source))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        obj = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exn:
        key = getattr(exn, "full_key", None)
        raise DataConfigError(f"bad config key {key!r}: {exn.msg if hasattr(exn, 'msg') else exn}") from None
    return obj  # type: ignore[return-value]


def load_prepare_config(source: str | dict | None = None, overrides: list[str] | None = None) -> PrepareConfig:
    """Load and check a :class:`PrepareConfig` from a YAML path or dict plus ``key=value`` overrides."""
    cfg = _load(PrepareConfig, source, overrides)
    if not cfg.inputs:
        raise DataConfigError("inputs: give at least one folder, file or file list")
    for name in ("max_samples_per_shard", "max_bytes_per_shard", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise DataConfigError(f"{name} must be > 0, got {getattr(cfg, name)}")
    if cfg.num_cpus <= 0:
        raise DataConfigError(f"num_cpus must be > 0, got {cfg.num_cpus}")
    return cfg


def load_data_config(source: str | dict | None = None, overrides: list[str] | None = None) -> DataConfig:
    """Load and check a :class:`DataConfig` from a YAML path or dict plus ``key=value`` overrides."""
    cfg = _load(DataConfig, source, overrides)
    if cfg.segment_seconds * cfg.sample_rate < 960:
        raise DataConfigError(f"segment_seconds={cfg.segment_seconds} is shorter than one 960-sample hop")
    if cfg.segments_per_track < 1 or cfg.max_tries < 1:
        raise DataConfigError("segments_per_track and max_tries must be >= 1")
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise DataConfigError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.semantic.actors < 1 or cfg.semantic.batch_size < 1 or cfg.cpu.batch_size < 1:
        raise DataConfigError("semantic.actors, semantic.batch_size and cpu.batch_size must be >= 1")
    return cfg

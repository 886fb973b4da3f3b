"""Typed configuration of the training job (``jobs.train``).

The codec part (model, teacher, loss weights, optimizer, discriminator) is ``codec.config.CodecConfig``,
taken from a codec preset (``codec_preset``) or, when fine-tuning, from the ``init.checkpoint`` being
fine-tuned, and overridable key by key under ``codec.``; the rest describes the run: data, Ray scaling,
schedule, MLflow and a failure-injection hook.

Loading merges ``schema <- codec preset or checkpoint config <- train YAML <- dotlist overrides`` and
validates values (and, when fine-tuning, that the checkpoint's tensors fit), so a bad config fails before
any Ray work with a :class:`TrainConfigError` naming the key (e.g. ``scaling.num_workers: must be >= 1, got 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from codec.checkpoint import is_mlflow_uri
from codec.config import CodecConfig, ConfigError, load_codec_config, validate_codec_config
from pipelines.data_config import DataConfig, DataConfigError, load_data_config
from pipelines.train_init import DISCRIMINATOR_MODES, InitError, check_init, codec_config_path

DATA_SOURCES = ("shards", "synthetic")


class TrainConfigError(ValueError):
    """An invalid training configuration; the message starts with the offending key."""


@dataclass
class RunSection:
    """Identity and storage of a run. Resubmitting the same ``name`` resumes it."""

    name: str = "muq-xcodec-local"
    storage_path: str = "ray_results"  # local folder (relative to the working dir) or s3://bucket/prefix
    seed: int = 0


@dataclass
class LoaderSection:
    """How the workers consume data.

    ``source: shards`` reads the WebDataset shards of the ``data`` section (``pipelines.data``, train and
    validation splits by track hash); ``source: synthetic`` makes ``num_synthetic`` seeded music-like
    clips per split in memory (smoke runs, benchmarks). ``batch_size`` is per worker. ``materialize``
    computes the train set once before training (small smoke datasets only: every epoch then replays
    the same segments).
    """

    source: str = "synthetic"
    batch_size: int = 2
    val_batch_size: int = 2
    val_batches: int = 1
    num_synthetic: int = 16
    materialize: bool = False


@dataclass
class ScalingSection:
    """Ray Train workers. CPUs per worker may be fractional so Ray Data stages keep CPUs to run on."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 1.0
    backend: str | None = None  # None: nccl with GPUs, gloo without


@dataclass
class ScheduleSection:
    """Steps, logging, validation and checkpoint cadence, fault tolerance."""

    max_steps: int = 50
    log_every: int = 1
    val_every: int = 25
    checkpoint_every: int = 10
    num_to_keep: int = 2
    max_failures: int = 2
    val_quantizers: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    num_audio_samples: int = 1
    find_unused_parameters: bool = True  # quantizer dropout leaves codebooks without grads


@dataclass
class MLflowSection:
    """Tracking and registry. ``tracking_uri`` null: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``."""

    tracking_uri: str | None = None
    registry_uri: str | None = None
    experiment: str = "muq-xcodec"
    artifact_location: str | None = None  # null: beside a sqlite db, else the server's default
    register_name: str | None = "muq-xcodec-tiny"  # null: log the model without registering it
    alias: str = "latest"


@dataclass
class InitSection:
    """Fine-tuning: start from a trained codec instead of random weights.

    ``checkpoint`` is a codec checkpoint directory (e.g. ``python -m codec import-muq-xcodec`` output; a
    local path must be readable on every node) or an MLflow model URI (``models:/NAME@ALIAS``). Its
    ``config.yaml`` replaces ``codec_preset`` as the base of ``codec`` (overrides of loss weights, optimizer
    etc. still apply; the geometry must fit the weights), its generator weights start the generator and
    its teacher (``teacher.safetensors`` unless published) computes the semantic targets.
    ``discriminator``: ``auto`` starts from the checkpoint's ``discriminator.safetensors`` if it has one,
    ``load`` requires it, ``fresh`` starts a new one. Optimizers and the step count start fresh; resuming a
    run (same ``run.name``) restores its own latest checkpoint instead.
    """

    checkpoint: str | None = None
    discriminator: str = "auto"


@dataclass
class DebugSection:
    """Failure injection: raise on worker ``fail_rank`` at step ``fail_at_step``, first attempt only."""

    fail_at_step: int | None = None
    fail_rank: int = 0


@dataclass
class TrainConfig:
    """The whole training job."""

    codec_preset: str | None = None  # null: "tiny", or the init.checkpoint's own config
    codec: CodecConfig = field(default_factory=CodecConfig)
    run: RunSection = field(default_factory=RunSection)
    data: DataConfig = field(default_factory=lambda: DataConfig(segment_seconds=1.92))
    loader: LoaderSection = field(default_factory=LoaderSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    schedule: ScheduleSection = field(default_factory=ScheduleSection)
    mlflow: MLflowSection = field(default_factory=MLflowSection)
    init: InitSection = field(default_factory=InitSection)
    debug: DebugSection = field(default_factory=DebugSection)


def _fail(key: str, message: str) -> None:
    raise TrainConfigError(f"{key}: {message}")


def _merge(*layers: Any) -> DictConfig:
    try:
        return OmegaConf.merge(*layers)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "<config>"
        msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
        raise TrainConfigError(f"{key}: {msg}") from None


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] | None = None) -> DictConfig:
    """Load, type-check and validate a training config.

    Args:
        path: YAML file; None uses the embedded defaults (a local CPU smoke run on synthetic music).
        overrides: omegaconf dotlist, e.g. ``["scaling.num_workers=1", "codec.optim.lr=3e-4"]``.

    Returns:
        DictConfig: a structured ``TrainConfig``, read-only.

    Raises:
        TrainConfigError: unknown key, wrong type or bad value (the message names the key).
        FileNotFoundError: missing YAML or codec preset.
    """
    raw = OmegaConf.load(path) if path is not None else OmegaConf.create({})
    if not isinstance(raw, DictConfig):
        _fail("<config>", f"{path}: expected a mapping at the top level")
    try:
        dot = OmegaConf.from_dotlist(list(overrides or []))
    except OmegaConfBaseException as e:
        _fail("<overrides>", str(e).splitlines()[0])
    missing = sorted(OmegaConf.missing_keys(_merge(raw, dot)))
    if missing:
        _fail(missing[0], "required (??? in the config): set it, e.g. as an override")
    preset, init = _top_level(raw, dot, "codec_preset"), _top_level(raw, dot, "init")
    checkpoint = init.get("checkpoint") if isinstance(init, DictConfig) else None
    if checkpoint and preset:
        _fail("codec_preset", f"set either codec_preset ({preset}) or init.checkpoint: fine-tuning takes the "
                              "codec config of the checkpoint")
    if checkpoint:
        checkpoint = absolute_path(str(checkpoint))
        dot = _merge(dot, {"init": {"checkpoint": checkpoint}})
    try:
        codec_base = load_codec_config(codec_config_path(checkpoint) if checkpoint else str(preset or "tiny"))
    except InitError as e:  # its message starts with the key
        raise TrainConfigError(str(e)) from None
    except ConfigError as e:
        _fail(f"init.checkpoint ({checkpoint})" if checkpoint else f"codec_preset ({preset})", str(e))
    except FileNotFoundError as e:
        _fail("codec_preset", str(e))
    cfg = _merge(OmegaConf.structured(TrainConfig), {"codec": codec_base}, raw, dot)
    validate_train_config(cfg)
    if cfg.init.checkpoint:
        try:
            check_init(cfg)
        except InitError as e:
            raise TrainConfigError(str(e)) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _top_level(raw: DictConfig, dot: DictConfig, key: str) -> Any:
    """``key`` as set by the YAML or the overrides (overrides win); None when neither sets it."""
    return OmegaConf.merge({key: None}, {k: v for k, v in raw.items() if k == key},
                           {k: v for k, v in dot.items() if k == key})[key]


def absolute_path(ref: str) -> str:
    """URIs (``models:/``, ``s3://``) as given; local paths made absolute so workers in other directories
    see the same folder."""
    return ref if "://" in ref or is_mlflow_uri(ref) else str(Path(ref).expanduser().resolve())


def validate_train_config(cfg: DictConfig) -> None:
    """Value checks; raises :class:`TrainConfigError` naming the key."""
    try:
        validate_codec_config(cfg.codec)
    except ConfigError as e:
        raise TrainConfigError(f"codec.{e}") from None
    if not cfg.run.name or "/" in cfg.run.name:
        _fail("run.name", f"must be a non-empty name without '/', got {cfg.run.name!r}")
    if not cfg.run.storage_path:
        _fail("run.storage_path", "must be set")
    try:
        load_data_config(OmegaConf.to_container(cfg.data, resolve=True))
    except DataConfigError as e:
        raise TrainConfigError(f"data: {e}") from None
    t = cfg.data.teacher
    if t.random is not None or t.checkpoint is not None or t.model_id != DataConfig().teacher.model_id:
        _fail("data.teacher", "the data pipeline uses codec.teacher; set the teacher there")
    ld = cfg.loader
    if ld.source not in DATA_SOURCES:
        _fail("loader.source", f"must be one of {DATA_SOURCES}, got {ld.source!r}")
    if ld.source == "shards" and not cfg.data.shards:
        _fail("data.shards", "required when loader.source is 'shards'")
    if ld.source == "shards" and cfg.data.val_fraction <= 0:
        _fail("data.val_fraction", "must be > 0: validation uses the held-out tracks")
    if cfg.data.sample_rate != cfg.codec.model.sample_rate:
        _fail("data.sample_rate", f"must equal codec.model.sample_rate={cfg.codec.model.sample_rate}")
    for key in ("batch_size", "val_batch_size", "val_batches", "num_synthetic"):
        if ld[key] < 1:
            _fail(f"loader.{key}", f"must be >= 1, got {ld[key]}")
    s = cfg.scaling
    if s.num_workers < 1:
        _fail("scaling.num_workers", f"must be >= 1, got {s.num_workers}")
    if s.cpus_per_worker <= 0:
        _fail("scaling.cpus_per_worker", f"must be > 0, got {s.cpus_per_worker}")
    if s.use_gpu and s.gpus_per_worker <= 0:
        _fail("scaling.gpus_per_worker", f"must be > 0 with use_gpu, got {s.gpus_per_worker}")
    if s.backend not in (None, "gloo", "nccl"):
        _fail("scaling.backend", f"must be gloo, nccl or null, got {s.backend!r}")
    if s.backend == "nccl" and not s.use_gpu:
        _fail("scaling.backend", "nccl needs scaling.use_gpu=true")
    sc = cfg.schedule
    for key in ("max_steps", "log_every", "val_every", "checkpoint_every", "num_to_keep"):
        if sc[key] < 1:
            _fail(f"schedule.{key}", f"must be >= 1, got {sc[key]}")
    if sc.max_failures < -1:
        _fail("schedule.max_failures", f"must be >= -1 (-1 = unlimited), got {sc.max_failures}")
    n_cb = cfg.codec.model.n_codebooks
    if not sc.val_quantizers or any(not 1 <= q <= n_cb for q in sc.val_quantizers):
        _fail("schedule.val_quantizers", f"must be in [1, {n_cb}], got {list(sc.val_quantizers)}")
    if sc.num_audio_samples < 0:
        _fail("schedule.num_audio_samples", f"must be >= 0, got {sc.num_audio_samples}")
    if not cfg.mlflow.experiment:
        _fail("mlflow.experiment", "must be set")
    if not cfg.mlflow.alias:
        _fail("mlflow.alias", "must be set")
    if cfg.init.discriminator not in DISCRIMINATOR_MODES:
        _fail("init.discriminator", f"must be one of {DISCRIMINATOR_MODES}, got {cfg.init.discriminator!r}")
    if cfg.codec.teacher.source == "imported" and not cfg.init.checkpoint:
        _fail("codec.teacher.source", "an imported teacher's weights live in a checkpoint: set init.checkpoint")
    dbg = cfg.debug
    if dbg.fail_at_step is not None and not 1 <= dbg.fail_at_step <= sc.max_steps:
        _fail("debug.fail_at_step", f"must be in [1, schedule.max_steps={sc.max_steps}], got {dbg.fail_at_step}")
    if not 0 <= dbg.fail_rank < s.num_workers:
        _fail("debug.fail_rank", f"must be in [0, scaling.num_workers={s.num_workers}), got {dbg.fail_rank}")


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML (stored in checkpoints)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers (what Ray ships to the workers)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def from_dict(data: dict[str, Any]) -> DictConfig:
    """Rebuild the typed, read-only config on a worker from :func:`to_dict` output."""
    cfg = _merge(OmegaConf.structured(TrainConfig), data)
    OmegaConf.set_readonly(cfg, True)
    return cfg

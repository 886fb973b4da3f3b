"""Typed configuration of the training job (``jobs.train``).

The codec part (model, teacher, loss weights, optimizer, discriminator) is ``codec.config.CodecConfig``,
taken from a codec preset (``codec_preset``) or, when fine-tuning, from the ``init.checkpoint`` being
fine-tuned, and overridable key by key under ``codec.``; the rest describes the run: data, Ray scaling,
schedule, tracking (MLflow) and a failure-injection hook.

Loading merges ``schema <- codec preset or checkpoint config <- train YAML <- dotlist overrides`` and
validates values (and, when fine-tuning, that the checkpoint's tensors fit), so a bad config fails before
any Ray work with a ``ConfigError`` naming the key (e.g. ``scaling.num_workers: must be >= 1, got 0``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from codec.checkpoint import CONFIG_FILE, is_mlflow_uri
from codec.config import CodecConfig, TeacherConfig, load_codec_config, validate_codec_config
from codec.hub import is_hub_ref
from pipelines.common.config import (
    RENAMED_TRACKING,
    ConfigError,
    TrackingConfig,
    check_missing,
    fail,
    merge,
    read_layers,
    to_dict,
)
from pipelines.common.models import checkpoint_dir
from pipelines.common.tracking import resolve_tracking_uri
from pipelines.data.config import DataConfig, load_data_config
from pipelines.train.init import DISCRIMINATOR_MODES, check_init

DATA_SOURCES = ("shards", "synthetic")


@dataclass
class RunSection:
    """Identity and storage of a run. Resubmitting the same ``name`` resumes it."""

    name: str = "muq-xcodec-local"
    storage_path: str = "ray_results"  # local folder (relative to the working dir) or s3://bucket/prefix
    seed: int = 0


@dataclass
class LoaderSection:
    """How the workers consume data.

    ``source: shards`` reads the WebDataset shards of the ``data`` section (``pipelines.data.dataset``, train and
    validation splits by track hash); ``source: synthetic`` makes ``num_synthetic`` seeded music-like
    clips per split in memory (smoke runs, benchmarks). ``batch_size`` is per worker;
    ``shuffle_buffer_batches`` sizes each worker's local shuffle buffer in batches (0: no local shuffle).
    ``materialize``
    computes the train set once before training (small smoke datasets only: every epoch then replays
    the same segments). Validation uses the first ``val_batches * val_batch_size`` held-out segments
    (at least 2: identification accuracy compares the excerpts with each other; the more, the finer the
    accuracy and the per-layer code counts, at the cost of one encode and ``len(schedule.val_quantizers) + 1``
    decodes of each per validation).
    """

    source: str = "synthetic"
    batch_size: int = 2
    val_batch_size: int = 4
    val_batches: int = 2
    num_synthetic: int = 16
    materialize: bool = False
    shuffle_buffer_batches: int = 4


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
    """Steps, logging, validation and checkpoint cadence, fault tolerance.

    ``collapse_perplexity_floor``: a validation whose code perplexity in some RVQ layer is below it warns in
    the log and tags the run ``codec.collapsed_layers`` (a layer emitting one code has perplexity 1; 0
    turns the check off).
    """

    max_steps: int = 50
    log_every: int = 1
    val_every: int = 25
    checkpoint_every: int = 10
    num_to_keep: int = 2
    max_failures: int = 2
    val_quantizers: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    num_audio_samples: int = 1
    collapse_perplexity_floor: float = 2.0
    # DDP's extra autograd-graph pass per step; off: every parameter gets a gradient (quantizer dropout masks
    # RVQ layers but runs them all). Turn on for a model change that leaves parameters out of a step.
    find_unused_parameters: bool = False


@dataclass
class TrainTracking(TrackingConfig):
    """The shared ``tracking:`` section plus the model registration of the final checkpoint.

    ``run_name`` null: ``run.name``. ``register_name`` null: log the model without registering it.
    """

    register_name: str | None = "muq-xcodec-tiny"
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
    tracking: TrainTracking = field(default_factory=TrainTracking)
    init: InitSection = field(default_factory=InitSection)
    debug: DebugSection = field(default_factory=DebugSection)


def load_train_config(path: str | Path | None = None, overrides: Sequence[str] | None = None) -> DictConfig:
    """Load, type-check and validate a training config.

    Args:
        path: YAML file; None uses the embedded defaults (a local CPU smoke run on synthetic music).
        overrides: omegaconf dotlist, e.g. ``["scaling.num_workers=1", "codec.optim.lr=3e-4"]``.

    Returns:
        DictConfig: a structured ``TrainConfig``, read-only.

    Raises:
        ConfigError: unknown key, wrong type or bad value (the message names the key).
        FileNotFoundError: missing YAML or codec preset.
    """
    raw, dot = read_layers(path, overrides, renamed=RENAMED_TRACKING)
    check_missing(merge(None, raw, dot))
    preset, init = _top_level(raw, dot, "codec_preset"), _top_level(raw, dot, "init")
    checkpoint = init.get("checkpoint") if isinstance(init, DictConfig) else None
    if checkpoint and preset:
        fail("codec_preset", f"set either codec_preset ({preset}) or init.checkpoint: fine-tuning takes the "
                              "codec config of the checkpoint")
    if checkpoint:
        checkpoint = absolute_path(str(checkpoint))
        dot = merge(None, dot, {"init": {"checkpoint": checkpoint}})
    tracking = merge(TrainTracking, raw.get("tracking") or {}, dot.get("tracking") or {})
    if tracking.uri:  # absolute, so workers in other directories read the same store
        dot = merge(None, dot, {"tracking": {"uri": resolve_tracking_uri(tracking.uri)}})
        tracking = merge(TrainTracking, raw.get("tracking") or {}, dot.get("tracking") or {})
    try:
        source = (checkpoint_dir(checkpoint, tracking.uri, key="init.checkpoint") / CONFIG_FILE if checkpoint
                  else str(preset or "tiny"))
        codec_base = load_codec_config(source)
    except ConfigError as e:
        if str(e).startswith("init.checkpoint"):  # already names the key
            raise
        fail(f"init.checkpoint ({checkpoint})" if checkpoint else f"codec_preset ({preset})", str(e))
    except FileNotFoundError as e:
        fail("codec_preset", str(e))
    cfg = merge(TrainConfig, {"codec": codec_base}, raw, dot)
    validate_train_config(cfg)
    if cfg.init.checkpoint:
        check_init(cfg)
    return merge(None, cfg, readonly=True)


def _top_level(raw: DictConfig, dot: DictConfig, key: str) -> Any:
    """``key`` as set by the YAML or the overrides (overrides win); None when neither sets it."""
    return merge(None, {key: None}, {k: v for k, v in raw.items() if k == key},
                 {k: v for k, v in dot.items() if k == key})[key]


def absolute_path(ref: str) -> str:
    """URIs (``models:/``, ``s3://``) and Hugging Face Hub ids (``ORG/NAME``, :mod:`codec.hub`) as given; local
    paths made absolute so workers in other directories see the same folder."""
    if "://" in ref or is_mlflow_uri(ref) or is_hub_ref(ref):
        return ref
    return str(Path(ref).expanduser().resolve())


def validate_train_config(cfg: DictConfig) -> None:
    """Value checks; raises ``ConfigError`` naming the key."""
    try:
        validate_codec_config(cfg.codec)
    except ConfigError as e:
        raise ConfigError(f"codec.{e}") from None
    if not cfg.run.name or "/" in cfg.run.name:
        fail("run.name", f"must be a non-empty name without '/', got {cfg.run.name!r}")
    if not cfg.run.storage_path:
        fail("run.storage_path", "must be set")
    try:
        load_data_config(to_dict(cfg.data))
    except ConfigError as e:
        raise ConfigError(f"data.{e}") from None
    if to_dict(cfg.data.teacher) != to_dict(TeacherConfig()) or cfg.data.teacher_checkpoint is not None:
        fail("data.teacher", "the data pipeline uses codec.teacher; set the teacher there")
    ld = cfg.loader
    if ld.source not in DATA_SOURCES:
        fail("loader.source", f"must be one of {DATA_SOURCES}, got {ld.source!r}")
    if ld.source == "shards" and not cfg.data.shards:
        fail("data.shards", "required when loader.source is 'shards'")
    if ld.source == "shards" and cfg.data.val_fraction <= 0:
        fail("data.val_fraction", "must be > 0: validation uses the held-out tracks")
    if cfg.data.sample_rate != cfg.codec.model.sample_rate:
        fail("data.sample_rate", f"must equal codec.model.sample_rate={cfg.codec.model.sample_rate}")
    for key in ("batch_size", "val_batch_size", "val_batches", "num_synthetic"):
        if ld[key] < 1:
            fail(f"loader.{key}", f"must be >= 1, got {ld[key]}")
    if ld.shuffle_buffer_batches < 0:
        fail("loader.shuffle_buffer_batches", f"must be >= 0, got {ld.shuffle_buffer_batches}")
    if ld.val_batches * ld.val_batch_size < 2:
        fail("loader.val_batch_size", "validation needs >= 2 excerpts (loader.val_batches * loader.val_batch_size)")
    if ld.source == "synthetic" and ld.num_synthetic < 2:
        fail("loader.num_synthetic", f"must be >= 2 (validation compares excerpts), got {ld.num_synthetic}")
    s = cfg.scaling
    if s.num_workers < 1:
        fail("scaling.num_workers", f"must be >= 1, got {s.num_workers}")
    if s.cpus_per_worker <= 0:
        fail("scaling.cpus_per_worker", f"must be > 0, got {s.cpus_per_worker}")
    if s.use_gpu and s.gpus_per_worker <= 0:
        fail("scaling.gpus_per_worker", f"must be > 0 with use_gpu, got {s.gpus_per_worker}")
    if s.backend not in (None, "gloo", "nccl"):
        fail("scaling.backend", f"must be gloo, nccl or null, got {s.backend!r}")
    if s.backend == "nccl" and not s.use_gpu:
        fail("scaling.backend", "nccl needs scaling.use_gpu=true")
    sc = cfg.schedule
    for key in ("max_steps", "log_every", "val_every", "checkpoint_every", "num_to_keep"):
        if sc[key] < 1:
            fail(f"schedule.{key}", f"must be >= 1, got {sc[key]}")
    if sc.max_failures < -1:
        fail("schedule.max_failures", f"must be >= -1 (-1 = unlimited), got {sc.max_failures}")
    n_cb = cfg.codec.model.n_codebooks
    if not sc.val_quantizers or any(not 1 <= q <= n_cb for q in sc.val_quantizers):
        fail("schedule.val_quantizers", f"must be in [1, {n_cb}], got {list(sc.val_quantizers)}")
    if sc.num_audio_samples < 0:
        fail("schedule.num_audio_samples", f"must be >= 0, got {sc.num_audio_samples}")
    if sc.collapse_perplexity_floor < 0:
        fail("schedule.collapse_perplexity_floor", f"must be >= 0, got {sc.collapse_perplexity_floor}")
    if not cfg.tracking.experiment:
        fail("tracking.experiment", "must be set")
    if not cfg.tracking.alias:
        fail("tracking.alias", "must be set")
    if cfg.init.discriminator not in DISCRIMINATOR_MODES:
        fail("init.discriminator", f"must be one of {DISCRIMINATOR_MODES}, got {cfg.init.discriminator!r}")
    if cfg.codec.teacher.source == "imported" and not cfg.init.checkpoint:
        fail("codec.teacher.source", "an imported teacher's weights live in a checkpoint: set init.checkpoint")
    dbg = cfg.debug
    if dbg.fail_at_step is not None and not 1 <= dbg.fail_at_step <= sc.max_steps:
        fail("debug.fail_at_step", f"must be in [1, schedule.max_steps={sc.max_steps}], got {dbg.fail_at_step}")
    if not 0 <= dbg.fail_rank < s.num_workers:
        fail("debug.fail_rank", f"must be in [0, scaling.num_workers={s.num_workers}), got {dbg.fail_rank}")


def from_dict(data: dict[str, Any]) -> DictConfig:
    """Rebuild the typed, read-only config on a worker from :func:`to_dict` output."""
    return merge(TrainConfig, data, readonly=True)

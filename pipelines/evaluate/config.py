"""Typed config of the evaluation job (``jobs/evaluate.py``).

YAML file -> :func:`load_evaluate_config` (structured omegaconf merge + dotlist overrides + checks) ->
:class:`EvaluateConfig`. Every bad key or value fails here, before any Ray work, with a message that
names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipelines.common.config import (
    MISSING,
    RENAMED_TRACKING,
    ComputeConfig,
    TrackingConfig,
    check_compute,
    check_n_q,
    check_tracking,
    fail,
    load_config,
)
from pipelines.common.models import model_ref_problem
from pipelines.common.storage import StorageConfig

VISQOL_MODES = ("auto", "on", "off")
BASELINE_ENCODERS = ("auto", "libsndfile", "ffmpeg")


@dataclass
class MetricsConfig:
    """What is measured on every track.

    Attributes:
        n_q: RVQ layer counts to reconstruct with (each <= the model's ``n_codebooks``).
        visqol: "auto" (ViSQOL audio mode when ``visqol-python`` is installed, else reported absent),
            "on" (fail early when it is not installed) or "off".
        max_seconds: evaluate only the first ``max_seconds`` of each track (None = whole tracks).
        min_seconds: tracks shorter than this are skipped (reported as ``too_short``).
    """

    n_q: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    visqol: str = "auto"
    max_seconds: float | None = None
    min_seconds: float = 0.5


@dataclass
class BaselineConfig:
    """Opus baseline: the same tracks through Opus at fixed bitrates.

    Attributes:
        enabled: run the baseline (skipped, and said so, when no Opus encoder is available).
        kbps: target bitrates in kbps (mono).
        include_lowest: also the lowest bitrate the encoder supports (6 kbps for libsndfile, 0.5 for ffmpeg).
        encoder: "auto" (libsndfile when it has Opus, else ffmpeg with libopus), "libsndfile" or "ffmpeg".
    """

    enabled: bool = True
    kbps: list[float] = field(default_factory=lambda: [6.0])
    include_lowest: bool = True
    encoder: str = "auto"


@dataclass
class EvaluateTracking(TrackingConfig):
    """The shared ``tracking:`` section (the run logs metrics, eval.json, plot, audio examples and a link to the
    model version; ``run_name`` None = "eval-<model>") plus the logged audio.

    Attributes:
        audio_examples: tracks whose original and reconstructions are logged as audio.
        example_seconds: length of each logged example.
    """

    experiment: str = "evaluation"
    audio_examples: int = 2
    example_seconds: float = 10.0


@dataclass
class EvaluateConfig:
    """Evaluate a codec on WebDataset shards of whole tracks.

    Attributes:
        model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/MODEL_ID``, ``runs:/RUN_ID/PATH``,
            a checkpoint dir, or the "tiny"/"debug" preset.
        shards: shard dir/prefix, glob or brace pattern, local or ``s3://``.
        output: where ``eval.json``, ``eval_table.txt`` and ``rate_distortion.png`` go (local or ``s3://``).
        max_tracks: evaluate at most this many tracks per shard (None = all).
        progress: show a progress bar.
        ray_address: None = ``RAY_ADDRESS`` or an embedded local Ray.
    """

    model: str = MISSING
    shards: str = MISSING
    output: str = "outputs/eval"
    max_tracks: int | None = None
    progress: bool = True
    ray_address: str | None = None
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    baseline: BaselineConfig = field(default_factory=BaselineConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: EvaluateTracking = field(default_factory=EvaluateTracking)


def load_evaluate_config(path: str | Path | None = None, overrides: list[str] | None = None) -> EvaluateConfig:
    """Load and check an evaluation config.

    Args:
        path: YAML file (keys of :class:`EvaluateConfig`), or None for the defaults.
        overrides: omegaconf dotlist, e.g. ``["model=models:/codec@prod", "metrics.n_q=[1,8]"]``.

    Returns:
        The checked config object.

    Raises:
        ConfigError: unknown key, wrong type, missing or bad value; the message names the key.
        FileNotFoundError: ``path`` does not exist.
    """
    obj = load_config(EvaluateConfig, path, overrides, renamed=RENAMED_TRACKING)
    check_evaluate_config(obj)
    return obj


def check_evaluate_config(cfg: EvaluateConfig) -> None:
    """Value checks that types alone don't catch. Raises ConfigError naming the key."""
    problem = model_ref_problem(cfg.model)
    if problem:
        fail("model", problem)
    if not cfg.shards.strip():
        fail("shards", "empty")
    if not cfg.output.strip():
        fail("output", "empty")
    if cfg.max_tracks is not None and cfg.max_tracks < 1:
        fail("max_tracks", f"{cfg.max_tracks} < 1")
    mt = cfg.metrics
    check_n_q("metrics.n_q", mt.n_q)
    # YAML 1.1 reads a bare on/off as a boolean, which omegaconf then stores as "True"/"False".
    mt.visqol = {"false": "off", "true": "on"}.get(str(mt.visqol).lower(), str(mt.visqol).lower())
    if mt.visqol not in VISQOL_MODES:
        fail("metrics.visqol", f"{mt.visqol!r} not in {'/'.join(VISQOL_MODES)}")
    if mt.max_seconds is not None and mt.max_seconds <= 0:
        fail("metrics.max_seconds", f"{mt.max_seconds} <= 0")
    if mt.min_seconds < 0:
        fail("metrics.min_seconds", f"{mt.min_seconds} < 0")
    b = cfg.baseline
    if any(not 0.5 <= k <= 512 for k in b.kbps):
        fail("baseline.kbps", f"{list(b.kbps)}: Opus bitrates are 0.5..512 kbps")
    if b.encoder not in BASELINE_ENCODERS:
        fail("baseline.encoder", f"{b.encoder!r} not in {'/'.join(BASELINE_ENCODERS)}")
    check_compute(cfg.compute)
    t = cfg.tracking
    check_tracking(t)
    if t.audio_examples < 0:
        fail("tracking.audio_examples", f"{t.audio_examples} < 0")
    if t.example_seconds <= 0:
        fail("tracking.example_seconds", f"{t.example_seconds} <= 0")

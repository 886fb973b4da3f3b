"""Typed config of the tokenization job (``jobs/tokenize.py``).

YAML file -> :func:`load_tokenize_config` (structured omegaconf merge + dotlist overrides + checks) ->
:class:`TokenizeConfig`. Every bad key or value fails here, before any Ray work, with a message that
names the key.
"""

from __future__ import annotations

import hashlib
import json
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
from pipelines.tokenize.writers import FORMATS

FORMAT_VERSION = 1


@dataclass
class TokenizeCompute(ComputeConfig):
    """The shared compute section (one model per actor; each actor tokenizes one whole shard per call) plus
    how tracks are batched.

    Attributes:
        batch_size: max tracks per ``Codec.encode`` call (tracks are sorted by length first).
        batch_seconds: max padded audio seconds per ``Codec.encode`` call (limits memory); a track
            longer than this is encoded alone.
    """

    batch_size: int = 8
    batch_seconds: float = 600.0


@dataclass
class TokenizeTracking(TrackingConfig):
    """The shared ``tracking:`` section; ``run_name`` None = "tokenize-<output shard dir name>"."""

    experiment: str = "tokenization"


@dataclass
class TokenizeConfig:
    """Tokenize WebDataset shards of whole tracks into RVQ code shards.

    Attributes:
        model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/MODEL_ID`` (MLflow 3 logged
            model), ``runs:/RUN_ID/PATH``, a local
            checkpoint dir, or the "tiny"/"debug" preset (random weights, demos only).
        input: shard dir/prefix, glob or brace pattern, local or ``s3://``.
        output: output dir/prefix, local or ``s3://``; gets one file per input shard (same name).
        output_format: "tar" (WebDataset: ``KEY.codes.npy`` + ``KEY.json``) or "parquet" (one row per
            track; loads with ``datasets.load_dataset("parquet", ...)``); see :mod:`pipelines.tokenize.writers`.
        n_q: codebooks to keep (None = all).
        overwrite: redo shards that are already done.
        progress: show a progress bar.
        storage: ``s3://`` endpoint/credentials (empty = AWS environment); never logged.
        ray_address: None = ``RAY_ADDRESS`` or an embedded local Ray.
    """

    model: str = MISSING
    input: str = MISSING
    output: str = MISSING
    output_format: str = "tar"
    n_q: int | None = None
    overwrite: bool = False
    progress: bool = True
    ray_address: str | None = None
    compute: TokenizeCompute = field(default_factory=TokenizeCompute)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TokenizeTracking = field(default_factory=TokenizeTracking)


def load_tokenize_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TokenizeConfig:
    """Load and check a tokenization config.

    Args:
        path: YAML file (keys of :class:`TokenizeConfig`), or None for the defaults.
        overrides: omegaconf dotlist, e.g. ``["model=models:/codec@prod", "compute.actors=2"]``.

    Returns:
        The checked config object.

    Raises:
        ConfigError: unknown key, wrong type, missing or bad value; the message names the key.
    """
    obj = load_config(TokenizeConfig, path, overrides, renamed=RENAMED_TRACKING)
    check_tokenize_config(obj)
    return obj


def check_tokenize_config(cfg: TokenizeConfig) -> None:
    """Value checks that types alone don't catch. Raises ConfigError naming the key."""
    problem = model_ref_problem(cfg.model)
    if problem:
        fail("model", problem)
    for key in ("input", "output"):
        if not getattr(cfg, key).strip():
            fail(key, "empty")
    if cfg.input.rstrip("/") == cfg.output.rstrip("/"):
        fail("output", "must differ from input")
    if cfg.output_format not in FORMATS:
        fail("output_format", f"{cfg.output_format!r} not in {FORMATS}")
    if cfg.n_q is not None:
        check_n_q("n_q", [cfg.n_q])
    c = cfg.compute
    check_compute(c)
    if c.batch_size < 1:
        fail("compute.batch_size", f"{c.batch_size} < 1")
    if c.batch_seconds <= 0:
        fail("compute.batch_seconds", f"{c.batch_seconds} <= 0")
    check_tracking(cfg.tracking)


def config_hash(model_version_uri: str, n_q: int, output_format: str = "tar") -> str:
    """Hash of everything that determines the output files (not paths or compute layout).

    Args:
        model_version_uri: the concrete model (``models:/NAME/V``, ``runs:/...``, a weights digest).
        n_q: codebooks kept.
        output_format: "tar" or "parquet" (tar hashes as before the format existed, so old outputs resume).

    Returns:
        16 hex chars.
    """
    spec = {"format": FORMAT_VERSION, "model": model_version_uri, "n_q": n_q}
    if output_format != "tar":
        spec["output_format"] = output_format
    blob = json.dumps(spec, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

"""Typed config of the tokenization job (``jobs/tokenize.py``).

YAML file -> :func:`load_tokenize_config` (structured omegaconf merge + dotlist overrides + checks) ->
:class:`TokenizeConfig`. Every bad key or value fails here, before any Ray work, with a message that
names the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipelines.storage import StorageConfig

MODEL_URI_RE = re.compile(r"^(models:/[^/@]+(@[^/]+|/[^/]+)?|runs:/[^/]+/.+)$")
PRESETS = ("tiny", "debug")
FORMAT_VERSION = 1


class TokenizeConfigError(ValueError):
    """A bad tokenization config; the message names the offending key."""


@dataclass
class ComputeConfig:
    """Ray Data actor pool running MuQ + the encoder.

    Attributes:
        actors: actor-pool size (each actor holds one model and tokenizes one whole shard per call).
        num_gpus: GPUs per actor (0 on CPU).
        num_cpus: CPUs reserved per actor.
        torch_threads: intra-op threads per actor; None uses ``num_cpus``.
        batch_size: max tracks per ``Codec.encode`` call (tracks are sorted by length first).
        batch_seconds: max padded audio seconds per ``Codec.encode`` call (limits memory); a track
            longer than this is encoded alone.
        device: "auto" (cuda when the actor has a GPU), "cpu" or "cuda".
    """

    actors: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    torch_threads: int | None = None
    batch_size: int = 8
    batch_seconds: float = 600.0
    device: str = "auto"


@dataclass
class TrackingConfig:
    """MLflow run of the job; also where ``models:/`` and ``runs:/`` model URIs are looked up.

    Attributes:
        enabled: log an MLflow run (params, stats, lineage to the model version).
        tracking_uri: None = ``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``.
        experiment: experiment name.
        run_name: None = "tokenize-<output shard dir name>".
    """

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = "tokenization"
    run_name: str | None = None


@dataclass
class TokenizeConfig:
    """Tokenize WebDataset shards of whole tracks into RVQ code shards.

    Attributes:
        model: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``models:/MODEL_ID`` (MLflow 3 logged
            model), ``runs:/RUN_ID/PATH``, a local
            checkpoint dir, or the "tiny"/"debug" preset (random weights, demos only).
        input: shard dir/prefix, glob or brace pattern, local or ``s3://``.
        output: output dir/prefix, local or ``s3://``; gets one shard per input shard (same name).
        n_q: codebooks to keep (None = all).
        overwrite: redo shards that are already done.
        progress: show a progress bar.
        storage: ``s3://`` endpoint/credentials (empty = AWS environment); never logged.
        ray_address: None = ``RAY_ADDRESS`` or an embedded local Ray.
    """

    model: str = MISSING
    input: str = MISSING
    output: str = MISSING
    n_q: int | None = None
    overwrite: bool = False
    progress: bool = True
    ray_address: str | None = None
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def load_structured(schema: type, path: str | Path | None, overrides: list[str] | None,
                    error: type[Exception], label: str) -> Any:
    """``schema`` defaults <- YAML ``path`` <- dotlist ``overrides``, as a typed object.

    Raises:
        error: unknown key, wrong type or missing value, as ``"<label> config key '<key>': <reason>"``.
        FileNotFoundError: ``path`` does not exist.
    """
    try:
        cfg = OmegaConf.structured(schema)
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no such config file: {path}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(str(path)))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        msg = str(e).splitlines()[0]
        raise error(f"{label} config key '{key}': {msg}") from None


def load_tokenize_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TokenizeConfig:
    """Load and check a tokenization config.

    Args:
        path: YAML file (keys of :class:`TokenizeConfig`), or None for the defaults.
        overrides: omegaconf dotlist, e.g. ``["model=models:/codec@prod", "compute.actors=2"]``.

    Returns:
        The checked config object.

    Raises:
        TokenizeConfigError: unknown key, wrong type, missing or bad value; the message names the key.
    """
    obj = load_structured(TokenizeConfig, path, overrides, TokenizeConfigError, "tokenize")
    check_tokenize_config(obj)
    return obj


def model_ref_problem(model: str) -> str | None:
    """Why ``model`` is not a usable model reference (MLflow URI, preset or checkpoint dir), or None."""
    m = model.strip()
    if not m:
        return "empty"
    if m.startswith(("models:/", "runs:/")):
        if not MODEL_URI_RE.match(m):
            return f"{m!r} is not models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID or runs:/RUN_ID/PATH"
    elif m not in PRESETS and "://" not in m and not Path(m).is_dir():
        return f"{m!r} is not an MLflow model URI, a preset {PRESETS} or an existing checkpoint dir"
    return None


def _fail(key: str, msg: str) -> None:
    raise TokenizeConfigError(f"tokenize config key '{key}': {msg}")


def check_tokenize_config(cfg: TokenizeConfig) -> None:
    """Value checks that types alone don't catch. Raises TokenizeConfigError naming the key."""
    problem = model_ref_problem(cfg.model)
    if problem:
        _fail("model", problem)
    for key in ("input", "output"):
        if not getattr(cfg, key).strip():
            _fail(key, "empty")
    if cfg.input.rstrip("/") == cfg.output.rstrip("/"):
        _fail("output", "must differ from input")
    if cfg.n_q is not None and not 1 <= cfg.n_q <= 64:
        _fail("n_q", f"{cfg.n_q} out of range 1..64")
    c = cfg.compute
    if c.actors < 1:
        _fail("compute.actors", f"{c.actors} < 1")
    if c.num_gpus < 0:
        _fail("compute.num_gpus", f"{c.num_gpus} < 0")
    if c.num_cpus <= 0:
        _fail("compute.num_cpus", f"{c.num_cpus} <= 0")
    if c.torch_threads is not None and c.torch_threads < 1:
        _fail("compute.torch_threads", f"{c.torch_threads} < 1")
    if c.batch_size < 1:
        _fail("compute.batch_size", f"{c.batch_size} < 1")
    if c.batch_seconds <= 0:
        _fail("compute.batch_seconds", f"{c.batch_seconds} <= 0")
    if c.device not in ("auto", "cpu", "cuda"):
        _fail("compute.device", f"{c.device!r} not in auto/cpu/cuda")
    if not cfg.tracking.experiment.strip():
        _fail("tracking.experiment", "empty")


def config_hash(model_version_uri: str, n_q: int) -> str:
    """Hash of everything that determines the output codes (not paths or compute layout).

    Args:
        model_version_uri: the concrete model (``models:/NAME/V``, ``runs:/...``, a weights digest).
        n_q: codebooks kept.

    Returns:
        16 hex chars.
    """
    blob = json.dumps({"format": FORMAT_VERSION, "model": model_version_uri, "n_q": n_q}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

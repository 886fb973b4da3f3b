"""Fine-tuning: start a training run from a codec checkpoint instead of random weights.

``init.checkpoint`` names a codec checkpoint directory (``Codec.save_pretrained`` layout, e.g. the output of
``python -m codec import-muq-xcodec``) or an MLflow model URI. The run takes its codec config from there,
:func:`check_init` proves on the driver (before any Ray work) that the weights fit that config, and every
worker loads them with :func:`load_init_weights` when Ray hands it no checkpoint of the run itself
(a resumed run continues from its own checkpoints). Optimizers, schedulers and the step start fresh.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from codec.checkpoint import DISCRIMINATOR_FILE, MODEL_FILE, TEACHER_FILE, load_weights
from pipelines.common import models
from pipelines.common.config import ConfigError

logger = logging.getLogger(__name__)

DISCRIMINATOR_MODES = ("auto", "load", "fresh")


def checkpoint_dir(cfg: Any) -> Path:
    """Local directory of ``init.checkpoint``, fetched from the run's ``tracking:`` store when it is a URI."""
    return models.checkpoint_dir(cfg.init.checkpoint, cfg.tracking.uri, key="init.checkpoint")


def _shapes(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


def check_fits(module: nn.Module, path: Path, key: str) -> None:
    """Raise :class:`ConfigError` (naming ``key`` and the first differing tensors) unless the safetensors file
    holds exactly the module's tensors with the same shapes. Reads the file header only."""
    stored = _shapes(path)
    wanted = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    problems = [f"missing {k}" for k in sorted(wanted.keys() - stored.keys())]
    problems += [f"unexpected {k}" for k in sorted(stored.keys() - wanted.keys())]
    problems += [f"{k}: checkpoint {list(stored[k])} vs config {list(wanted[k])}"
                 for k in sorted(wanted.keys() & stored.keys()) if stored[k] != wanted[k]]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(f"{key}: {path.name} does not fit the run's codec config: {'; '.join(problems[:3])}{more}")


def loads_discriminator(cfg: Any) -> bool:
    """Whether the run starts its discriminator from the checkpoint (``init.discriminator``)."""
    has = (checkpoint_dir(cfg) / DISCRIMINATOR_FILE).is_file()
    return cfg.init.discriminator == "load" or (cfg.init.discriminator == "auto" and has)


def check_init(cfg: Any) -> None:
    """Driver-side proof that ``init.checkpoint`` can start the run described by ``cfg``.

    Raises:
        ConfigError: a missing file or a tensor that does not fit ``cfg.codec`` (message names the key).
    """
    from codec.builders import build_discriminator, build_generator

    directory = checkpoint_dir(cfg)
    check_fits(build_generator(cfg.codec), directory / MODEL_FILE, "codec.model")
    if loads_discriminator(cfg):
        if not (directory / DISCRIMINATOR_FILE).is_file():
            raise ConfigError(f"init.discriminator: 'load' but {directory} has no {DISCRIMINATOR_FILE} "
                            "(import with --with-discriminator, or use 'auto' / 'fresh')")
        check_fits(build_discriminator(cfg.codec), directory / DISCRIMINATOR_FILE, "codec.discriminator")
    if cfg.codec.teacher.source != "pretrained" and not (directory / TEACHER_FILE).is_file():
        raise ConfigError(f"init.checkpoint: a {cfg.codec.teacher.source} teacher needs {TEACHER_FILE} in {directory}")


def load_init_weights(cfg: Any, generator: nn.Module, discriminator: nn.Module) -> str:
    """Load the checkpoint's generator (and discriminator, per ``init.discriminator``) in place.

    Returns:
        What was loaded, for the log.
    """
    directory = checkpoint_dir(cfg)
    load_weights(generator, directory / MODEL_FILE)
    loaded = ["generator"]
    if loads_discriminator(cfg):
        load_weights(discriminator, directory / DISCRIMINATOR_FILE)
        loaded.append("discriminator")
    return f"{' + '.join(loaded)} from {cfg.init.checkpoint}"


def teacher_weights(cfg: Any) -> Path | None:
    """The checkpoint's ``teacher.safetensors`` when the run's teacher is not a published model."""
    if not cfg.init.checkpoint or cfg.codec.teacher.source == "pretrained":
        return None
    return checkpoint_dir(cfg) / TEACHER_FILE

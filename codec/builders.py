"""The single place that turns a codec config into objects (generator, teacher, discriminator, train step).

Config flows one way: ``load_codec_config`` -> these builders -> plain-valued constructors. Random
initialisation is seeded from ``cfg.seed`` without touching the caller's global RNG state, so every
process (e.g. every DDP rank) builds identical weights.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from muq import MuQ

    from codec.model.discriminator import Discriminator
    from codec.model.teacher import MuQTeacher
    from codec.model.xcodec import XCodec
    from codec.train_step import GANTrainStep


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's CPU RNG seeded, restoring the previous RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def generator_kwargs(cfg: Any) -> dict[str, Any]:
    """XCodec constructor arguments for a codec config (plain Python values)."""
    m = cfg.model
    return dict(sample_rate=int(m.sample_rate), encoder_dim=int(m.encoder_dim),
                encoder_rates=[int(r) for r in m.encoder_rates],
                latent_dim=None if m.latent_dim is None else int(m.latent_dim),
                semantic_dim=int(cfg.teacher.dim), decoder_dim=int(m.decoder_dim),
                decoder_rates=[int(r) for r in m.decoder_rates], n_codebooks=int(m.n_codebooks),
                codebook_size=int(m.codebook_size), codebook_dim=int(m.codebook_dim),
                quantizer_dropout=float(m.quantizer_dropout), init=str(m.init),
                semantic_norm=bool(m.semantic_norm), latent_norm=str(m.latent_norm),
                codebook_init_from_data=bool(m.codebook_init_from_data), dead_code_steps=int(m.dead_code_steps),
                dc_block_seconds=float(m.dc_block_seconds))


def build_generator(cfg: Any) -> XCodec:
    """XCodec generator with weights initialised from ``cfg.seed``."""
    from codec.model.xcodec import XCodec

    with seeded(int(cfg.seed)):
        return XCodec(**generator_kwargs(cfg))


def build_teacher(cfg: Any, weights: str | Path | None = None) -> MuQTeacher:
    """The frozen MuQ teacher: the published ``teacher.model_id``, a seeded random one (``source: random``) or
    an imported architecture (``source: imported``).

    Args:
        cfg: codec config.
        weights: a checkpoint's ``teacher.safetensors`` to load into it (required for ``source: imported``).

    Raises:
        FileNotFoundError: an imported teacher without ``weights``.
        ValueError: the built teacher's feature dim differs from ``teacher.dim``.
    """
    from codec.model.teacher import MuQTeacher

    t = cfg.teacher
    if t.source == "random":
        teacher = MuQTeacher.random(dim=int(t.dim), depth=int(t.depth), heads=int(t.heads),
                                    conv_dim=int(t.conv_dim), seed=int(t.seed), layer=int(t.layer))
    elif t.source == "imported":
        from codec.config import config_to_dict

        if weights is None:
            raise FileNotFoundError("teacher.source=imported: its weights (teacher.safetensors) are needed")
        teacher = MuQTeacher(build_muq(config_to_dict(t.muq_config)), layer=int(t.layer))
    else:
        teacher = MuQTeacher.from_pretrained(str(t.model_id), layer=int(t.layer))
    if teacher.dim != int(t.dim):
        raise ValueError(f"teacher.dim: config says {t.dim} but {t.model_id or 'the teacher'} has dim {teacher.dim}")
    if weights is not None:
        from codec.checkpoint import load_weights

        load_weights(teacher.muq, weights)
    return teacher


def build_muq(muq_config: Mapping[str, Any]) -> MuQ:
    """An (untrained) ``muq.MuQ`` of the given architecture, leaving the global RNG states untouched.

    Its weights are meant to be overwritten (e.g. with ``teacher.safetensors``).
    """
    from muq import MuQ
    from muq.muq.muq import MuQConfig

    py_state = random.getstate()  # MuQModel calls random.seed()
    try:
        with torch.random.fork_rng(devices=[]):
            return MuQ(MuQConfig(**json.loads(json.dumps(dict(muq_config)))))
    finally:
        random.setstate(py_state)


def build_discriminator(cfg: Any) -> Discriminator:
    """Multi-period + multi-band STFT discriminator, weights initialised from ``cfg.seed + 1``."""
    from codec.model.discriminator import Discriminator

    d = cfg.discriminator
    with seeded(int(cfg.seed) + 1):
        return Discriminator(sample_rate=int(cfg.model.sample_rate), periods=[int(p) for p in d.periods],
                             fft_sizes=[int(n) for n in d.fft_sizes],
                             bands=[(float(lo), float(hi)) for lo, hi in d.bands],
                             period_channels=int(d.period_channels), stft_channels=int(d.stft_channels))


def loss_weights(cfg: Any) -> dict[str, float]:
    """Generator loss weights from ``cfg.loss`` as a plain dict."""
    return {str(k): float(v) for k, v in cfg.loss.items()}


def build_train_step(cfg: Any, generator: torch.nn.Module, discriminator: torch.nn.Module,
                     teacher: torch.nn.Module | None = None, device: str | torch.device = "cpu") -> GANTrainStep:
    """A GANTrainStep with optimizer and loss settings from ``cfg.optim`` / ``cfg.loss``.

    Args:
        cfg: codec config.
        generator: XCodec (possibly DDP-wrapped).
        discriminator: Discriminator (possibly DDP-wrapped).
        teacher: frozen teacher; when None, semantic features must be passed to each step.
        device: training device.
    """
    from codec.train_step import GANTrainStep

    o = cfg.optim
    return GANTrainStep(generator, discriminator, sample_rate=int(cfg.model.sample_rate), teacher=teacher,
                        lr=float(o.lr), betas=(float(o.betas[0]), float(o.betas[1])), gamma=float(o.gamma),
                        weights=loss_weights(cfg), grad_clip=None if o.grad_clip is None else float(o.grad_clip),
                        bf16=bool(o.bf16), device=device)

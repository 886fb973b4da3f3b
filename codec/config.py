"""Typed codec configuration: omegaconf structured configs, YAML presets and value validation.

The YAML presets in ``configs/codec/`` are the single source of truth for the shipped models; the
dataclass defaults below only give the schema (types, allowed keys) and contract-level defaults.
A preset may start with ``base: <other preset>`` and then list only what it changes.

Loading merges ``schema <- YAML <- overrides`` so an unknown key or a value of the wrong type fails with a
``ConfigError`` (a ``ValueError``) naming the full key, and :func:`validate_codec_config` then checks the
values (integer frame rate, chunk grid, ranges, ...).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

PRESET_SUFFIXES = (".yaml", ".yml")
TEACHER_SOURCES = ("pretrained", "random", "imported")
INFERENCE_MODES = ("default", "reference")
DECODE_MODES = ("context", "per_chunk")
TEACHER_WINDOWS = ("padded", "trimmed")
INITS = ("zero_bias", "default", "trunc_normal")  # XCodec(init=...), XCodec(latent_norm=...)
LATENT_NORMS = ("none", "batch", "layer")


class ConfigError(ValueError):
    """An invalid codec configuration; the message starts with the offending key."""


@dataclass
class ModelConfig:
    """Generator (XCodec) geometry."""

    sample_rate: int = 24000
    encoder_dim: int = 64
    encoder_rates: list[int] = field(default_factory=lambda: [2, 4, 10, 12])
    latent_dim: int | None = None  # None: encoder_dim * 2 ** len(encoder_rates)
    decoder_dim: int = 1536
    decoder_rates: list[int] = field(default_factory=lambda: [12, 10, 4, 2])
    n_codebooks: int = 8
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_dropout: float = 0.5
    # Learning defences (XCodec's docstring). The schema defaults are the original muq-xcodec architecture
    # (what imported checkpoints and configs written before these keys existed need); the presets turn them on.
    init: str = "trunc_normal"  # "zero_bias": PyTorch's weights, zero conv biases (see XCodec)
    semantic_norm: bool = False  # standardise teacher features per channel (running stats) before fusion
    latent_norm: str = "none"  # "batch" / "layer": normalise the fused latent before the RVQ (no affine)
    codebook_init_from_data: bool = False  # codebooks start on the first training batch's latents
    dead_code_steps: int = 0  # restart codes unused for this many training steps (0 = never)
    dc_block_seconds: float = 0.0  # decoder output minus its moving average over this window: no DC (0 = off)


@dataclass
class TeacherConfig:
    """Frozen MuQ teacher: a published model (``source: pretrained``) or a random tiny one (``random``).

    ``depth``, ``heads``, ``conv_dim`` and ``seed`` are only used by ``source: random``. ``source: imported``
    is a MuQ taken from another checkpoint (``python -m codec import-muq-xcodec``): ``muq_config`` holds its
    architecture (MuQ's ``config.json``) and its weights are stored beside ours in ``teacher.safetensors``.
    """

    source: str = "pretrained"
    model_id: str = "OpenMuQ/MuQ-large-msd-iter"
    layer: int = -1
    dim: int = 1024
    depth: int = 12
    heads: int = 16
    conv_dim: int = 512
    seed: int = 0
    muq_config: dict[str, Any] | None = None  # source: imported only


@dataclass
class InferenceConfig:
    """Windowing of encode/decode on a fixed absolute chunk grid.

    Chunk ``k`` covers frames ``[k*C, (k+1)*C)`` with ``C = chunk_seconds * frame_rate`` and is computed
    from that span plus ``context_seconds`` of audio on each side (zeros outside the track), so codes do
    not depend on how a track is split. ``window_seconds`` only bounds how much audio one forward pass
    sees (``window_seconds // chunk_seconds`` chunks are batched together). ``mode: reference`` reproduces
    the original muq-xcodec inference: non-overlapping chunks without context, the last chunk ending at the
    track's end, and the first channel instead of the channel mean. ``decode: per_chunk`` decodes each chunk
    from its own codes only (the original's chunked reconstruction); ``context`` gives each chunk
    ``context_seconds`` of neighbouring codes. ``compile`` runs the acoustic encoder through ``torch.compile``.

    ``teacher_window`` is what MuQ sees for chunk ``k`` in default mode (MuQ attends over its whole input, so
    this is part of what the codes mean): ``padded`` (the schema default, hence every checkpoint written
    before the key existed) the full ``chunk + 2 * context`` window with zeros outside the track; ``trimmed``
    (the shipped presets) the same window clipped to the track, so a 3 s track runs MuQ on exactly 3 s.
    """

    chunk_seconds: float = 10.0
    context_seconds: float = 2.0
    window_seconds: float = 30.0
    mode: str = "default"
    decode: str = "context"
    compile: bool = False
    teacher_window: str = "padded"


@dataclass
class LossConfig:
    """Generator loss weights (keys match ``GANTrainStep``'s ``weights``)."""

    commitment: float = 0.25
    codebook: float = 1.0
    mel: float = 15.0
    adv: float = 1.0
    feature_matching: float = 2.0
    semantic: float = 10.0


@dataclass
class OptimConfig:
    """AdamW for generator and discriminator with exponential LR decay."""

    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.8, 0.99])
    gamma: float = 0.999996
    grad_clip: float | None = None
    bf16: bool = False


@dataclass
class DiscriminatorConfig:
    """Multi-period + multi-band multi-scale STFT discriminator."""

    periods: list[int] = field(default_factory=lambda: [2, 3, 5, 7, 11])
    fft_sizes: list[int] = field(default_factory=lambda: [2048, 1024, 512])
    bands: list[list[float]] = field(
        default_factory=lambda: [[0.0, 0.1], [0.1, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]])
    period_channels: int = 32
    stft_channels: int = 32


@dataclass
class CodecConfig:
    """Everything needed to build, train and run one codec."""

    name: str = "muq_xcodec"
    seed: int = 0  # generator / discriminator init seed
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)


def presets_dir() -> Path:
    """The folder holding the YAML presets: ``configs/codec`` in a checkout; in an installed wheel the same
    files ship as ``codec/presets`` (see ``pyproject.toml``)."""
    checkout = Path(__file__).resolve().parents[1] / "configs" / "codec"
    return checkout if checkout.is_dir() else Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    """Names of the shipped presets (``tiny``, ``muq_xcodec``, ...)."""
    return sorted(p.stem for p in presets_dir().iterdir() if p.suffix in PRESET_SUFFIXES)


def resolve_preset(name_or_path: str | Path) -> Path:
    """Map a preset name (``"tiny"``) or a YAML path to an existing file.

    Raises:
        FileNotFoundError: neither an existing file nor a known preset.
    """
    path = Path(name_or_path)
    if path.suffix in PRESET_SUFFIXES and path.is_file():
        return path
    for suffix in PRESET_SUFFIXES:
        candidate = presets_dir() / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no codec config file or preset named {str(name_or_path)!r} "
                            f"(presets: {', '.join(list_presets())})")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    """Read a preset, resolving ``base:`` chains (later files override earlier ones)."""
    if path in seen:
        raise ConfigError(f"base: circular preset chain {' -> '.join(str(p) for p in (*seen, path))}")
    raw = OmegaConf.load(path)
    if not isinstance(raw, DictConfig):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = raw.pop("base", None)
    if base is None:
        return raw
    return OmegaConf.merge(_read_yaml(resolve_preset(base), (*seen, path)), raw)


def load_codec_config(source: str | Path | Mapping[str, Any] | DictConfig = "muq_xcodec",
                      overrides: Sequence[str] | Mapping[str, Any] | None = None) -> DictConfig:
    """Load, type-check and validate a codec config.

    Args:
        source: preset name (``"tiny"``, ``"muq_xcodec"``), path to a YAML file, or a mapping
            (e.g. a resolved ``config.yaml`` of a checkpoint, or a node of a training config).
        overrides: dotlist (``["model.n_codebooks=4"]``) or mapping merged last.

    Returns:
        DictConfig: a structured (typed) ``CodecConfig``; attribute access, read-only.

    Raises:
        ConfigError: unknown key, wrong type or invalid value; the message names the key.
        FileNotFoundError: unknown preset / missing file.
    """
    if isinstance(source, (str, Path)):
        data = _read_yaml(resolve_preset(source))
    else:
        data = OmegaConf.create(dict(source) if not isinstance(source, DictConfig) else source)
        if "base" in data:
            base = data.pop("base")
            data = OmegaConf.merge(_read_yaml(resolve_preset(base)), data)
    layers: list[Any] = [OmegaConf.structured(CodecConfig), data]
    if overrides:
        layers.append(OmegaConf.from_dotlist(list(overrides)) if not isinstance(overrides, Mapping)
                      else OmegaConf.create(dict(overrides)))
    try:
        cfg = OmegaConf.merge(*layers)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "<config>"
        msg = (getattr(e, "msg", None) or str(e)).splitlines()[0]
        raise ConfigError(f"{key}: {msg}") from None
    validate_codec_config(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def validate_codec_config(cfg: DictConfig) -> None:
    """Value checks the type system cannot express. Raises ConfigError naming the key."""
    m, t, inf = cfg.model, cfg.teacher, cfg.inference
    _check(m.sample_rate > 0, "model.sample_rate", f"must be positive, got {m.sample_rate}")
    for key in ("encoder_dim", "decoder_dim", "codebook_dim", "n_codebooks"):
        _check(m[key] > 0, f"model.{key}", f"must be positive, got {m[key]}")
    _check(m.latent_dim is None or m.latent_dim > 0, "model.latent_dim", f"must be positive, got {m.latent_dim}")
    _check(len(m.encoder_rates) > 0 and all(r > 0 for r in m.encoder_rates), "model.encoder_rates",
           f"must be a non-empty list of positive strides, got {list(m.encoder_rates)}")
    hop = math.prod(m.encoder_rates)
    _check(m.sample_rate % hop == 0, "model.encoder_rates",
           f"hop {hop} does not give an integer frame rate at {m.sample_rate} Hz")
    _check(all(r > 0 for r in m.decoder_rates) and math.prod(m.decoder_rates) == hop, "model.decoder_rates",
           f"product must equal the encoder hop {hop}, got {list(m.decoder_rates)}")
    _check(m.codebook_size >= 2 and m.codebook_size & (m.codebook_size - 1) == 0, "model.codebook_size",
           f"must be a power of two >= 2, got {m.codebook_size}")
    _check(m.codebook_size <= 32768, "model.codebook_size", "codes are stored as int16; must be <= 32768")
    _check(0.0 <= m.quantizer_dropout <= 1.0, "model.quantizer_dropout",
           f"must be in [0, 1], got {m.quantizer_dropout}")
    _check(m.init in INITS, "model.init", f"must be one of {INITS}, got {m.init!r}")
    _check(m.latent_norm in LATENT_NORMS, "model.latent_norm", f"must be one of {LATENT_NORMS}, got {m.latent_norm!r}")
    _check(m.dead_code_steps >= 0, "model.dead_code_steps", f"must be >= 0 (0 = off), got {m.dead_code_steps}")
    _check(m.dc_block_seconds == 0 or m.dc_block_seconds * m.sample_rate >= 3, "model.dc_block_seconds",
           f"must be 0 (off) or a window of >= 3 samples, got {m.dc_block_seconds}")

    _check(t.source in TEACHER_SOURCES, "teacher.source", f"must be one of {TEACHER_SOURCES}, got {t.source!r}")
    _check(bool(t.model_id) or t.source != "pretrained", "teacher.model_id", "required for a pretrained teacher")
    _check((t.muq_config is not None) == (t.source == "imported"), "teacher.muq_config",
           "required for (and only for) an imported teacher")
    _check(t.muq_config is None or t.muq_config.get("encoder_dim") == t.dim, "teacher.muq_config",
           f"encoder_dim must equal teacher.dim={t.dim}")
    for key in ("dim", "depth", "heads", "conv_dim"):
        _check(t[key] > 0, f"teacher.{key}", f"must be positive, got {t[key]}")
    _check(t.dim % t.heads == 0, "teacher.heads", f"must divide teacher.dim={t.dim}, got {t.heads}")
    _check(-(t.depth + 1) <= t.layer <= t.depth, "teacher.layer",
           f"must be in [{-(t.depth + 1)}, {t.depth}] for depth {t.depth}, got {t.layer}")
    _check(m.sample_rate == 24000 and hop == 960, "model.encoder_rates",
           f"the MuQ teacher runs at 24000 Hz / 25 frames/s; need sample_rate 24000 and hop 960, "
           f"got {m.sample_rate} Hz and hop {hop}")

    frame_rate = m.sample_rate // hop
    _check(inf.mode in INFERENCE_MODES, "inference.mode", f"must be one of {INFERENCE_MODES}, got {inf.mode!r}")
    _check(inf.teacher_window in TEACHER_WINDOWS, "inference.teacher_window",
           f"must be one of {TEACHER_WINDOWS}, got {inf.teacher_window!r}")
    _check(inf.decode in DECODE_MODES, "inference.decode", f"must be one of {DECODE_MODES}, got {inf.decode!r}")
    _check(inf.chunk_seconds > 0, "inference.chunk_seconds", f"must be > 0, got {inf.chunk_seconds}")
    _check(_is_whole(inf.chunk_seconds * frame_rate), "inference.chunk_seconds",
           f"must be a whole number of frames at {frame_rate} frames/s, got {inf.chunk_seconds}")
    _check(inf.context_seconds >= 0, "inference.context_seconds", f"must be >= 0, got {inf.context_seconds}")
    _check(_is_whole(inf.context_seconds * frame_rate), "inference.context_seconds",
           f"must be a whole number of frames at {frame_rate} frames/s, got {inf.context_seconds}")
    _check(inf.window_seconds >= inf.chunk_seconds, "inference.window_seconds",
           f"must be >= inference.chunk_seconds={inf.chunk_seconds}, got {inf.window_seconds}")

    for key, value in cfg.loss.items():
        _check(value >= 0, f"loss.{key}", f"must be >= 0, got {value}")
    o = cfg.optim
    _check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    _check(len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas), "optim.betas",
           f"must be two values in [0, 1), got {list(o.betas)}")
    _check(0 < o.gamma <= 1, "optim.gamma", f"must be in (0, 1], got {o.gamma}")
    _check(o.grad_clip is None or o.grad_clip > 0, "optim.grad_clip", f"must be > 0 or null, got {o.grad_clip}")
    d = cfg.discriminator
    for key in ("period_channels", "stft_channels"):
        _check(d[key] > 0, f"discriminator.{key}", f"must be positive, got {d[key]}")
    _check(all(p > 0 for p in d.periods), "discriminator.periods", f"must be positive, got {list(d.periods)}")
    _check(all(n > 0 for n in d.fft_sizes), "discriminator.fft_sizes", f"must be positive, got {list(d.fft_sizes)}")
    _check(all(len(b) == 2 and 0 <= b[0] < b[1] <= 1 for b in d.bands), "discriminator.bands",
           f"must be [lo, hi] pairs with 0 <= lo < hi <= 1, got {OmegaConf.to_container(d.bands)}")


def _is_whole(x: float) -> bool:
    return abs(x - round(x)) < 1e-9


def config_to_yaml(cfg: DictConfig) -> str:
    """The fully resolved config as YAML (what checkpoints store)."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def config_to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The fully resolved config as plain Python containers."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def hop_length(cfg: Any) -> int:
    """Samples per code frame of a codec config: the product of its encoder strides (960 for MuQ's grid)."""
    return math.prod(int(r) for r in cfg.model.encoder_rates)


def frame_rate(cfg: Any) -> float:
    """Code frames per second of a codec config (25 for the shipped models)."""
    return int(cfg.model.sample_rate) / hop_length(cfg)


def bitrate(cfg: Any, n_q: int) -> float:
    """Bits per second of the first ``n_q`` RVQ layers of a codec config (250 per layer at 25 x 1024)."""
    return n_q * frame_rate(cfg) * math.log2(int(cfg.model.codebook_size))

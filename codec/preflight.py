"""Checks of an encode/decode request that need neither torch nor the model's weights.

The command line runs them before it loads a model, so a wrong argument is reported at once (in well under
a second) instead of after the weights and MuQ are loaded. :class:`codec.inference.Codec` uses the same
rules (:func:`resolve_n_q`, :func:`check_output_audio`), so the API and the CLI never disagree.
"""

from __future__ import annotations

import errno
import math
import stat
from pathlib import Path
from typing import Any

PRESET_ALIASES = {"debug": "tiny"}
CHECKPOINT_CONFIG = "config.yaml"  # = codec.checkpoint.CONFIG_FILE (that module imports torch)

# Audio formats ``decode`` writes: each keeps the exact number of samples for every reader (Ogg Vorbis through
# its granule positions).
OUTPUT_FORMATS = (".wav", ".flac", ".ogg", ".aiff", ".caf", ".w64")
# Refused, with the reason. MP3 holds whole 1152-sample frames after an encoder delay: the exact length lives
# only in the LAME/Xing gapless header, which gapless-aware readers (libsndfile/mpg123) honour and many tools
# ignore (they report 0.496 s for 0.455 s of audio); and it would add a second lossy stage after the codec.
REFUSED_OUTPUT_FORMATS = {
    ".mp3": "MP3 output is not supported: MP3 pads the audio to whole frames after an encoder delay, so its "
            "length is exact only for readers that honour the LAME gapless header; write .wav or .flac "
            "(or .ogg) and convert it with an MP3 encoder if you need MP3",
}


def bitrate_per_layer(frame_rate: float, codebook_size: int) -> float:
    """Bits per second carried by one RVQ layer (250 for 25 frames/s x 1024 codes)."""
    return frame_rate * math.log2(codebook_size)


def resolve_n_q(n_q: int | None, bitrate: float | None, n_codebooks: int, per_layer: float) -> int:
    """Number of RVQ layers for ``n_q`` or ``bitrate`` (bps); all layers when both are None.

    Args:
        n_q: requested layers, or None.
        bitrate: requested bits per second (a multiple of ``per_layer``), or None.
        n_codebooks: layers the model has.
        per_layer: bits per second of one layer (:func:`bitrate_per_layer`).

    Raises:
        ValueError: out of range, unreachable bitrate, or ``n_q`` and ``bitrate`` disagree.
    """
    if bitrate is not None:
        k = bitrate / per_layer
        if abs(k - round(k)) > 1e-9 or not 1 <= round(k) <= n_codebooks:
            valid = ", ".join(f"{per_layer * j:g}" for j in range(1, n_codebooks + 1))
            raise ValueError(f"bitrate {bitrate:g} bps is not available; valid bitrates (bps): {valid}")
        if n_q is not None and n_q != round(k):
            raise ValueError(f"n_q={n_q} and bitrate={bitrate:g} bps ({round(k)} layers) disagree")
        return int(round(k))
    if n_q is None:
        return n_codebooks
    if not 1 <= n_q <= n_codebooks:
        raise ValueError(f"n_q must be in 1..{n_codebooks}, got {n_q}")
    return int(n_q)


def non_regular_kind(path: str | Path) -> str | None:
    """What a path is when it cannot be read as a regular file (following symlinks); None for a regular file.

    Never opens the path, so a FIFO cannot block the caller.

    Returns:
        ``"missing"``, ``"a broken symlink"``, ``"a symlink loop"``, ``"a directory"``, ``"a FIFO (named pipe)"``,
        ``"a socket"``, ``"a device"``, ``"unreadable (<reason>)"`` or None.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "a broken symlink" if path.is_symlink() else "missing"
    except OSError as e:  # symlink loop, permission denied on a parent, name too long, ...
        if e.errno == errno.ELOOP:
            return "a symlink loop"
        return f"unreadable ({e.strerror or type(e).__name__})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def explain_unreadable(head: bytes, size: int) -> str | None:
    """Why a regular file holds no audio, when its first bytes tell: empty, or nothing but an ID3/APE tag.

    libsndfile reports such files with messages about something else ("File does not exist or is not a
    regular file (possibly a pipe?)"); this names the actual problem.

    Args:
        head: the file's first bytes (at least 10 for an ID3v2 header; a few KiB is plenty).
        size: the file's size in bytes.

    Returns:
        A short description, or None when the bytes say nothing definite.
    """
    if size == 0:
        return "an empty file (0 bytes)"
    if head[:3] == b"ID3" and len(head) >= 10 and head[3] in (2, 3, 4) and all(b < 0x80 for b in head[6:10]):
        tag = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10])) + (10 if head[5] & 0x10 else 0)
        rest = head[tag:] if len(head) >= size else None
        if size <= tag or (rest is not None and not rest.strip(b"\0")):
            return f"only an ID3 tag ({size} bytes), no audio frames"
    if size == 128 and head[:3] == b"TAG":
        return "only an ID3v1 tag (128 bytes), no audio frames"
    if head[:8] == b"APETAGEX" and size <= 4096:
        return f"only an APE tag ({size} bytes), no audio frames"
    return None


def unreadable_reason(head: bytes, size: int, error: str) -> str:
    """The reason to report for a regular file libsndfile cannot open: :func:`explain_unreadable` when the bytes
    tell, else libsndfile's ``error`` text, with its "possibly a pipe?" wording (its text for "no known format",
    also for regular files) replaced."""
    if "possibly a pipe" in error:
        error = "not a recognised audio format (libsndfile found no audio stream)"
    return explain_unreadable(head, size) or error


def check_input_file(path: str | Path, kind: str = "an audio file") -> Path:
    """An existing regular file (or a symlink to one).

    Args:
        path: the file.
        kind: what it should be, for messages ("an audio file", "a code file").

    Raises:
        FileNotFoundError: missing, a directory, or not a regular file (FIFO, device, socket, broken symlink,
            symlink loop); the message says which.
    """
    path = Path(path)
    what = non_regular_kind(path)
    if what == "missing":
        raise FileNotFoundError(f"no such file: {path}")
    if what is not None:
        raise FileNotFoundError(f"{path} is {what}, not {kind}")
    return path


def check_output_audio(path: str | Path) -> Path:
    """An output path whose format (from the suffix) is one of :data:`OUTPUT_FORMATS`.

    Raises:
        ValueError: refused format (MP3), unknown suffix, or the path is a directory.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in REFUSED_OUTPUT_FORMATS:
        raise ValueError(f"cannot write {path}: {REFUSED_OUTPUT_FORMATS[suffix]}")
    if suffix not in OUTPUT_FORMATS:
        raise ValueError(f"cannot write {path}: unknown audio format {suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(OUTPUT_FORMATS)}")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a directory")
    return path


def peek_config(model: str | Path) -> Any | None:
    """The codec config of a preset or a local checkpoint directory, without building or loading a model.

    Returns None for what only the model loader can resolve (MLflow URIs, unknown names, ...): the loader then
    reports it.
    """
    from codec.config import list_presets, load_codec_config

    name = str(model)
    preset = PRESET_ALIASES.get(name, name)
    if preset in list_presets():
        return load_codec_config(preset)
    config = Path(name) / CHECKPOINT_CONFIG
    return load_codec_config(config) if config.is_file() else None


def check_encode_request(input: str | Path, model: str | Path, n_q: int | None = None,
                         bitrate: float | None = None) -> None:
    """Validate ``encode``'s arguments before loading the model: the input file and, when the model's config
    can be read without loading it (preset or checkpoint directory), ``n_q``/``bitrate``.

    Raises:
        FileNotFoundError: unusable input file.
        ValueError: input holds no audio (empty, only a tag), or ``n_q``/``bitrate`` not available for this model.
    """
    check_input_file(input)
    with open(input, "rb") as f:
        head = f.read(1 << 16)
    explained = explain_unreadable(head, Path(input).stat().st_size)
    if explained:
        raise ValueError(f"cannot read audio from {input}: {explained}")
    if n_q is None and bitrate is None:
        return
    cfg = peek_config(model)
    if cfg is None:
        return
    hop = math.prod(int(r) for r in cfg.model.encoder_rates)
    per_layer = bitrate_per_layer(cfg.model.sample_rate / hop, int(cfg.model.codebook_size))
    resolve_n_q(n_q, bitrate, int(cfg.model.n_codebooks), per_layer)


def check_decode_request(input: str | Path, output: str | Path, sample_rate: int | None = None) -> None:
    """Validate ``decode``'s arguments before loading the model.

    Raises:
        FileNotFoundError: unusable code file.
        ValueError: output format refused or unknown, or a non-positive sample rate.
    """
    check_input_file(input, kind="a code file")
    check_output_audio(output)
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")

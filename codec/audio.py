"""Audio I/O and conversion: soundfile reading/writing, channel downmix and resampling to the codec rate.

Conventions: tensors are channels-first (``[C, N]``, ``[B, C, N]``); soundfile's ``[N, C]`` arrays are
transposed on read/write. Multichannel audio is downmixed to mono by the mean of its channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from torch import Tensor

from codec.preflight import check_input_file, unreadable_reason


class AudioReadError(RuntimeError):
    """A file is missing or cannot be decoded as audio."""


def read_audio(path: str | Path) -> tuple[Tensor, int]:
    """Read an audio file (wav, flac, ogg, mp3, ... whatever libsndfile decodes).

    Returns:
        (audio [C, N] float32, sample_rate).

    Raises:
        AudioReadError: missing file or unreadable audio (one-line message naming the file).
    """
    path = Path(path)
    try:
        check_input_file(path)
    except FileNotFoundError as e:
        raise AudioReadError(str(e)) from None
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise AudioReadError(f"cannot read audio from {path}: {_unreadable_reason(path, e)}") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def _unreadable_reason(path: Path, error: Exception) -> str:
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    lines = str(getattr(error, "error_string", "") or error).strip().splitlines()
    return unreadable_reason(head, path.stat().st_size, lines[0] if lines and lines[0] else type(error).__name__)


def write_audio(path: str | Path, audio: Tensor | np.ndarray, sample_rate: int) -> Path:
    """Write [C, N] or [N] audio (format from the suffix, 16-bit PCM for wav). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = audio.detach().cpu().float().numpy() if isinstance(audio, Tensor) else np.asarray(audio, np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected [C, N] or [N] audio, got shape {x.shape}")
    subtype = "PCM_16" if path.suffix.lower() == ".wav" else None
    sf.write(str(path), np.clip(x.T, -1.0, 1.0), sample_rate, subtype=subtype)
    return path


def to_mono(audio: Tensor) -> Tensor:
    """Downmix [C, N] (or [N]) to [N] by averaging the channels."""
    if audio.dim() == 1:
        return audio
    if audio.dim() != 2:
        raise ValueError(f"expected [C, N] audio, got {tuple(audio.shape)}")
    return audio.mean(dim=0)


def resample(audio: Tensor, orig_sr: int, new_sr: int) -> Tensor:
    """Resample along the last axis with torchaudio's windowed sinc. Returns float32 [..., ceil(N*new/orig)]."""
    if orig_sr <= 0:
        raise ValueError(f"sample_rate must be positive, got {orig_sr}")
    audio = audio.float()
    if orig_sr == new_sr:
        return audio
    return AF.resample(audio, orig_sr, new_sr)


def as_track_list(audio: Tensor | np.ndarray | list, lengths: Tensor | np.ndarray | list[int] | None = None
                  ) -> list[Tensor]:
    """Normalise codec input to a list of channels-first tracks [C, N_i] (float32, CPU or original device).

    Args:
        audio: [N] (one mono track), [C, N] (one track, channels first), [B, C, N] (a batch), or a list of
            [N] / [C, N] arrays of different lengths. numpy or torch.
        lengths: valid samples per batch item for a padded [B, C, N] batch (the rest is ignored).

    Returns:
        list of [C, N_i] float tensors.
    """
    if isinstance(audio, (list, tuple)):
        if lengths is not None:
            raise ValueError("lengths is only for a padded [B, C, N] batch, not a list of tracks")
        tracks = []
        for item in audio:
            t = _as_tensor(item)
            if t.dim() not in (1, 2):
                raise ValueError(f"each listed track must be [N] or [C, N], got {tuple(t.shape)}")
            tracks.append(_check_channels_first(t[None] if t.dim() == 1 else t))
        return tracks
    x = _as_tensor(audio)
    if x.dim() == 1:
        x = x[None, None]
    elif x.dim() == 2:
        x = _check_channels_first(x)[None]
    elif x.dim() != 3:
        raise ValueError(f"audio must be [N], [C, N] or [B, C, N], got {tuple(x.shape)}")
    if lengths is None:
        return list(x.unbind(0))
    lengths = [int(n) for n in (lengths.tolist() if hasattr(lengths, "tolist") else lengths)]
    if len(lengths) != x.shape[0] or any(n < 0 or n > x.shape[-1] for n in lengths):
        raise ValueError(f"lengths {lengths} do not fit a batch of shape {tuple(x.shape)}")
    return [x[i, :, :n] for i, n in enumerate(lengths)]


def _as_tensor(x: Tensor | np.ndarray) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    if not t.is_floating_point():
        raise TypeError(f"audio must be floating point in [-1, 1], got {t.dtype}")
    return t.float()


def _check_channels_first(x: Tensor) -> Tensor:
    if x.shape[0] > x.shape[1]:
        raise ValueError(f"2-D audio must be channels first [C, N]; got {tuple(x.shape)} (transpose [N, C] input)")
    return x

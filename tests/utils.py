"""Shared test helpers: seeded music-like audio (from pipelines.common.synthetic) and small file writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.common.synthetic import music_clip, write_corpus  # noqa: F401  (re-exported for tests)


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, **kwargs) -> Path:
    """Write [N, C] audio with soundfile (format from the suffix) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sample_rate, **kwargs)
    return path

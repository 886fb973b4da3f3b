"""muq-xcodec: a semantic music codec (X-Codec 1.0 recipe with a frozen MuQ teacher).

>>> from codec import Codec
>>> codec = Codec.from_pretrained("tiny")            # or a checkpoint dir, models:/NAME@ALIAS, ORG/NAME (Hub)
>>> codes = codec.encode(audio, sample_rate=44100)   # int16 [B, n_q, T] at 25 frames/s
>>> audio_24k = codec.decode(codes)                  # [B, 1, T * 960] at 24 kHz

Call ``codec.tune_malloc()`` first in a program that encodes much audio (glibc: freed memory is kept for
reuse, about 1.6x faster on CPU; see :mod:`codec.allocator`).

Importing the package is cheap: muq, transformers, mlflow and omegaconf are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from codec.allocator import tune_malloc

__all__ = ["Codec", "get_model", "list_models", "load_codec_config", "tune_malloc"]

if TYPE_CHECKING:
    from codec.catalog import get_model, list_models
    from codec.config import load_codec_config
    from codec.inference import Codec


def __getattr__(name: str) -> Any:
    if name == "Codec":
        from codec.inference import Codec

        return Codec
    if name == "load_codec_config":
        from codec.config import load_codec_config

        return load_codec_config
    if name in ("get_model", "list_models"):
        from codec import catalog

        return getattr(catalog, name)
    raise AttributeError(f"module 'codec' has no attribute {name!r}")

"""A versioned code file (``.npz``): the codes of one track plus what is needed to decode it faithfully.

Layout: ``codes`` int16 [n_q, T] and ``metadata``, a JSON string (a numpy unicode scalar, so the file
loads with ``allow_pickle=False``). Readers refuse files from a newer format version.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1


@dataclass
class CodeFile:
    """Codes of one track and their metadata.

    Attributes:
        codes: int16 [n_q, T] code indices.
        sample_rate: codec output rate (Hz).
        frame_rate: code frames per second.
        codebook_size: codes per RVQ layer.
        original_length: samples of the input at its original rate.
        original_sample_rate: rate of the input file (Hz).
        original_channels: channels of the input file (downmixed to mono before encoding).
        model: id of the codec that made the codes (preset name, directory or MLflow URI).
        version: code file format version.
    """

    codes: np.ndarray
    sample_rate: int
    frame_rate: float
    codebook_size: int
    original_length: int
    original_sample_rate: int
    original_channels: int = 1
    model: str = ""
    version: int = FORMAT_VERSION

    @property
    def n_q(self) -> int:
        """Number of RVQ layers in ``codes``."""
        return int(self.codes.shape[0])

    @property
    def duration(self) -> float:
        """Duration of the original audio in seconds."""
        return self.original_length / self.original_sample_rate

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` (the suffix is added by numpy if missing). Returns the written path."""
        if self.codes.ndim != 2:
            raise ValueError(f"codes must be [n_q, T], got shape {self.codes.shape}")
        path = Path(path)
        if path.suffix != ".npz":
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in asdict(self).items() if k != "codes"}
        meta["n_q"] = self.n_q
        np.savez_compressed(path, codes=np.asarray(self.codes, dtype=np.int16), metadata=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> CodeFile:
        """Read a code file written by :meth:`save`.

        Raises:
            FileNotFoundError: missing file.
            ValueError: not a code file, or a newer format version.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such code file: {path}")
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a codec code file (.npz)")
        try:
            with np.load(path, allow_pickle=False) as data:
                codes = data["codes"]
                meta = json.loads(str(data["metadata"]))
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{path} is not a codec code file ({str(e).splitlines()[0]})") from None
        version = int(meta.pop("version", 0))
        if version > FORMAT_VERSION or version < 1:
            raise ValueError(f"{path}: code file version {version} is not supported (this reader: {FORMAT_VERSION})")
        meta.pop("n_q", None)
        fields = {k: meta[k] for k in cls.__dataclass_fields__ if k in meta}
        return cls(codes=codes.astype(np.int16, copy=False), version=version, **fields)

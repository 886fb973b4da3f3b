"""Pack token sequences into fixed-length language-model training windows (pure numpy, no Ray).

A track's codes (int [n_q, T]) become one sequence with a BOS before and an EOS after, cut into windows of
``window`` steps; the last window is filled with ``pad`` (or dropped, ``drop_last``). Windows never span two
tracks, so every window is a function of one track alone (deterministic, order-free).

Layouts (:class:`PackingConfig` ``layout``):

``flatten`` (one stream, VALL-E / "flattening" pattern): frame-major, ``t0q0 t0q1 .. t0q{n-1} t1q0 ...``;
layer ``q``'s code ``c`` becomes id ``q * codebook_size + c`` so layers never collide. Vocabulary:
``n_q * codebook_size`` code ids, then ``bos = n_q*K``, ``eos = n_q*K + 1``, ``pad = n_q*K + 2`` (defaults).
A window is int64 ``[window]``; the track's ``T`` frames take ``T * n_q + 2`` positions.

``parallel`` (MusicGen's "parallel" interleaving pattern: one stream per layer, predicted together): no offsets,
each layer keeps ids ``0..K-1``; ``bos = K``, ``eos = K + 1``, ``pad = K + 2`` (defaults) in every layer.
A window is int64 ``[n_q, window]``; the track takes ``T + 2`` steps.

Example (K=10, n_q=2, codes ``[[1, 2, 3], [4, 5, 6]]``, window 3, flatten): sequence
``[20, 1, 14, 2, 15, 3, 16, 21]`` -> windows ``[20, 1, 14]``, ``[2, 15, 3]``, ``[16, 21, 22]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LAYOUTS = ("flatten", "parallel")


@dataclass(frozen=True)
class PackingConfig:
    """How token sequences become training windows.

    Attributes:
        window: positions (flatten) or steps (parallel) per window.
        layout: "flatten" or "parallel" (module docstring).
        n_q: layers kept (the first ``n_q``; None = all the tokens have; then every track must have the same).
        codebook_size: codes per layer (1024 for muq-xcodec).
        bos, eos, pad: special ids (None = right after the code ids: module docstring).
        drop_last: drop a track's last, partly padded window instead of padding it.
    """

    window: int = 1024
    layout: str = "flatten"
    n_q: int | None = None
    codebook_size: int = 1024
    bos: int | None = None
    eos: int | None = None
    pad: int | None = None
    drop_last: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: {self.layout!r} not in {LAYOUTS}")
        if self.window < 1 or self.codebook_size < 1 or (self.n_q is not None and self.n_q < 1):
            raise ValueError("window, codebook_size and n_q must be >= 1")

    def code_ids(self, n_q: int) -> int:
        """Number of code ids (before the special ids) for ``n_q`` layers."""
        return n_q * self.codebook_size if self.layout == "flatten" else self.codebook_size

    def specials(self, n_q: int) -> tuple[int, int, int]:
        """(bos, eos, pad) ids for ``n_q`` layers."""
        base = self.code_ids(n_q)
        return (base if self.bos is None else self.bos, base + 1 if self.eos is None else self.eos,
                base + 2 if self.pad is None else self.pad)

    def vocab_size(self, n_q: int) -> int:
        """Embedding rows a model needs: every code id and special id fits below it."""
        return max(self.code_ids(n_q), *self.specials(n_q)) + 1


def sequence(codes: np.ndarray, cfg: PackingConfig) -> np.ndarray:
    """One track as a token sequence with BOS/EOS.

    Args:
        codes: int [n_q', T] (the first ``cfg.n_q`` layers are kept).

    Returns:
        int64 [T * n_q + 2] (flatten) or [n_q, T + 2] (parallel).

    Raises:
        ValueError: fewer layers than ``cfg.n_q`` or a code outside ``[0, codebook_size)``.
    """
    codes = np.asarray(codes)
    n_q = cfg.n_q or codes.shape[0]
    if codes.ndim != 2 or codes.shape[0] < n_q:
        raise ValueError(f"codes of shape {codes.shape} have fewer than n_q={n_q} layers")
    codes = codes[:n_q].astype(np.int64)
    if codes.size and (codes.min() < 0 or codes.max() >= cfg.codebook_size):
        raise ValueError(f"codes outside [0, {cfg.codebook_size}): min {codes.min()}, max {codes.max()}")
    bos, eos, _ = cfg.specials(n_q)
    if cfg.layout == "flatten":
        ids = (codes + cfg.codebook_size * np.arange(n_q)[:, None]).T.reshape(-1)  # frame-major
        return np.concatenate([[bos], ids, [eos]]).astype(np.int64)
    column = np.full((n_q, 1), 0, np.int64)
    return np.concatenate([column + bos, codes, column + eos], axis=1)


def windows(codes: np.ndarray, cfg: PackingConfig) -> np.ndarray:
    """A track's training windows.

    Args:
        codes: int [n_q', T].

    Returns:
        int64 [n_windows, window] (flatten) or [n_windows, n_q, window] (parallel).
    """
    seq = sequence(codes, cfg)
    steps = seq.shape[-1]
    n = steps // cfg.window if cfg.drop_last else -(-steps // cfg.window)
    pad = cfg.specials(seq.shape[0] if seq.ndim == 2 else (cfg.n_q or np.asarray(codes).shape[0]))[2]
    padded = np.full(seq.shape[:-1] + (n * cfg.window,), pad, np.int64)
    keep = min(steps, n * cfg.window)
    padded[..., :keep] = seq[..., :keep]
    if seq.ndim == 1:
        return padded.reshape(n, cfg.window)
    return padded.reshape(seq.shape[0], n, cfg.window).transpose(1, 0, 2).copy()

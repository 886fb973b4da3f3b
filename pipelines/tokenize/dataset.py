"""Read a tokenize job's output (tar or Parquet) as a Ray Dataset and pack it into LM training windows.

::

    from pipelines.tokenize.dataset import read_tokens, pack_windows
    from pipelines.tokenize.packing import PackingConfig

    tokens = read_tokens("s3://corpus/tokens/")            # rows: key (str), codes (int16 [n_q, T])
    train = pack_windows(tokens, PackingConfig(window=2048, layout="flatten"))  # rows: input_ids (int64)
    for batch in train.iter_torch_batches(batch_size=8):   # in a Ray Train worker: get_dataset_shard("train")
        batch["input_ids"]                                 # [8, 2048]

Only files whose done marker exists are read (a run still writing, or killed, never yields a partial file),
each once, whatever the format; :func:`token_files` lists them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.common import shard_io as tio
from pipelines.common.storage import StorageConfig
from pipelines.tokenize.packing import PackingConfig, windows
from pipelines.tokenize.writers import format_of, make_writer


def token_files(output: str, storage: StorageConfig | None = None) -> list[str]:
    """URLs of the done token files under a tokenize output (sorted; tar and Parquet alike).

    Raises:
        FileNotFoundError: no done shard under ``output``.
    """
    storage = (storage or StorageConfig()).resolved()
    names = sorted(tio.read_done(output, storage))
    if not names:
        raise FileNotFoundError(f"no tokenized shards under {output} (no {tio.DONE_DIR}/ markers)")
    return [tio.join(output, n) for n in names]


def read_token_file(url: str, storage: StorageConfig | None = None, with_meta: bool = False) -> list[dict[str, Any]]:
    """The tracks of one token file: ``{"key", "codes"}`` (int16 [n_q, T]) rows, plus ``"meta"`` (the
    per-track metadata dict) with ``with_meta``."""
    blob = tio.read_bytes(url, storage)
    rows = []
    for info, codes in make_writer(format_of(url)).read(blob):
        row = {"key": info["key"], "codes": codes}
        if with_meta:
            row["meta"] = info
        rows.append(row)
    return rows


def read_tokens(output: str, storage: StorageConfig | None = None) -> Any:
    """A Ray Dataset of the token sequences of a tokenize output (one row per track).

    Args:
        output: the job's ``output`` (local or ``s3://``); tar or Parquet, told by the file suffix.
        storage: ``s3://`` settings.

    Returns:
        ``ray.data.Dataset`` with rows ``{"key": str, "codes": int16 [n_q, T]}`` (T varies), one file per block.
    """
    import ray

    files = token_files(output, storage)
    resolved = (storage or StorageConfig()).resolved()

    def read(row: dict[str, Any]) -> list[dict[str, Any]]:
        return read_token_file(row["url"], resolved)

    return ray.data.from_items([{"url": u} for u in files], override_num_blocks=len(files)).flat_map(read)


def pack_windows(tokens: Any, cfg: PackingConfig) -> Any:
    """Training windows of a token Dataset (:mod:`pipelines.tokenize.packing`).

    Args:
        tokens: Ray Dataset with a ``codes`` column (e.g. :func:`read_tokens`).
        cfg: window length, layout, special ids.

    Returns:
        ``ray.data.Dataset`` with rows ``{"input_ids": int64 [window]}`` (flatten) or ``[n_q, window]``
        (parallel), ready for ``iter_torch_batches``.
    """
    def pack(row: dict[str, Any]) -> list[dict[str, np.ndarray]]:
        return [{"input_ids": w} for w in windows(row["codes"], cfg)]

    return tokens.flat_map(pack)

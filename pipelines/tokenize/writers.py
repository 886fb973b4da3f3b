"""Output formats of the tokenization job: one writer per format, each turning a shard's tokenized tracks into
the bytes of one output file (written atomically by the stage, done marker last) and reading them back.

``tar`` (WebDataset): ``KEY.codes.npy`` (int16 [n_q, T]) + ``KEY.json`` per track, deterministic tar.
``parquet``: one row per track, columns of :data:`PARQUET_SCHEMA`; ``codes`` is a list of ``n_q`` lists of
``T`` int16 (``datasets.load_dataset("parquet", ...)`` reads it as ``List(List(Value("int16")))``, pyarrow as
``list<list<int16>>``). Both are byte-deterministic for the same tracks, so a resumed run is byte-identical.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from pipelines.common import shard_io as tio

CODES_SUFFIX = "codes.npy"
FORMATS = ("tar", "parquet")
MODEL_KEYS = ("uri", "load_uri", "name", "version")


def npy_bytes(codes: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(codes), allow_pickle=False)
    return buf.getvalue()


def _parquet_schema() -> Any:
    import pyarrow as pa

    text = pa.string()
    return pa.schema([
        ("key", text), ("codes", pa.list_(pa.list_(pa.int16()))), ("n_q", pa.int32()), ("frames", pa.int64()),
        ("frame_rate", pa.int32()), ("duration", pa.float64()), ("sample_rate", pa.int32()),
        ("channels", pa.int32()), ("num_samples", pa.int64()), ("source_format", text), ("source_shard", text),
        ("source_meta", text),  # the input's KEY.json as JSON text (null when absent): its keys vary by corpus
        ("model", pa.struct([(k, text) for k in MODEL_KEYS])), ("config_hash", text)])


class TokenWriter:
    """One output format. Tracks are ``(info, codes)``: ``info`` the per-track metadata dict (key, duration,
    frames, n_q, frame_rate, sample_rate, channels, num_samples, source_format, source_shard, model,
    config_hash, optional source_meta), ``codes`` int16 [n_q, T]."""

    format = ""
    suffix = ""
    members = ""  # what the manifest says one track is

    def file_name(self, shard_name: str) -> str:
        """Output file of input shard ``NAME.tar`` (see :func:`pipelines.common.shard_io.shard_name`)."""
        return shard_name[: -len(".tar")] + self.suffix

    def encode(self, tracks: list[tuple[dict[str, Any], np.ndarray]]) -> bytes:
        raise NotImplementedError

    def read(self, blob: bytes) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """The ``(info, codes)`` of an output file, in key order."""
        raise NotImplementedError


class TarWriter(TokenWriter):
    format, suffix, members = "tar", ".tar", "KEY.codes.npy (int16 [n_q, T]) + KEY.json"

    def encode(self, tracks: list[tuple[dict[str, Any], np.ndarray]]) -> bytes:
        members: dict[str, bytes] = {}
        for info, codes in tracks:
            members[f"{info['key']}.{CODES_SUFFIX}"] = npy_bytes(codes)
            members[f"{info['key']}.json"] = tio.json_bytes(info)
        return tio.tar_bytes(members)

    def read(self, blob: bytes) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        for sample in tio.iter_samples(io.BytesIO(blob)):
            if CODES_SUFFIX in sample and "json" in sample:
                yield json.loads(sample["json"]), np.load(io.BytesIO(sample[CODES_SUFFIX]), allow_pickle=False)


class ParquetWriter(TokenWriter):
    format, suffix, members = "parquet", ".parquet", "one row per track (codes: list<list<int16>> [n_q][T])"

    def encode(self, tracks: list[tuple[dict[str, Any], np.ndarray]]) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _parquet_schema()
        rows = []
        for info, codes in tracks:
            row = {name: info.get(name) for name in schema.names}
            row["codes"] = [layer.tolist() for layer in codes]
            row["model"] = {k: info["model"].get(k) for k in MODEL_KEYS}
            meta = info.get("source_meta")
            row["source_meta"] = None if meta is None else json.dumps(meta, sort_keys=True)
            rows.append(row)
        table = pa.Table.from_pylist(rows, schema=schema)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd", row_group_size=64)
        return buf.getvalue()

    def read(self, blob: bytes) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        import pyarrow.parquet as pq

        for row in pq.read_table(io.BytesIO(blob)).to_pylist():
            codes = np.asarray(row.pop("codes"), dtype=np.int16).reshape(row["n_q"], row["frames"])
            if row.get("source_meta") is not None:
                row["source_meta"] = json.loads(row["source_meta"])
            else:
                row.pop("source_meta", None)
            yield row, codes


def make_writer(fmt: str) -> TokenWriter:
    """The writer of an ``output_format`` (``tar`` or ``parquet``)."""
    writers = {"tar": TarWriter, "parquet": ParquetWriter}
    if fmt not in writers:
        raise ValueError(f"unknown token output format {fmt!r}; expected one of {FORMATS}")
    return writers[fmt]()


def format_of(name: str) -> str:
    """The format of an output file by its suffix."""
    for fmt in FORMATS:
        if name.endswith(make_writer(fmt).suffix):
            return fmt
    raise ValueError(f"{name}: not a token file (.tar or .parquet)")

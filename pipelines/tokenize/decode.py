"""Turn a token shard back into audio for spot checks (``python -m jobs.detokenize``)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from pipelines.common import shard_io as tio
from pipelines.common.storage import StorageConfig
from pipelines.tokenize.stage import CODES_SUFFIX


def decode_shard(shard: str, output_dir: str | Path, model: str | None = None, keys: list[str] | None = None,
                 limit: int | None = None, n_q: int | None = None, sample_rate: int | None = None,
                 storage: StorageConfig | None = None, mlflow_uri: str | None = None) -> list[Path]:
    """Decode the tracks of one token shard to ``OUTPUT_DIR/KEY.wav``.

    Args:
        shard: token shard (local path or ``s3://``), as written by ``jobs.tokenize``.
        output_dir: local folder for the wav files.
        model: codec to decode with (default: the pinned model recorded in each track's json).
        keys: only these tracks (default: all).
        limit: at most this many tracks.
        n_q: decode with the first ``n_q`` codebooks only.
        sample_rate: output rate (default: the track's source rate).
        storage: ``s3://`` settings.
        mlflow_uri: tracking/registry URI for ``models:/`` and ``runs:/`` models.

    Returns:
        The written files, in shard order. Each is mono, trimmed to the source duration.
    """
    from codec.audio import resample, write_audio
    from codec.inference import Codec
    from pipelines.common.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(mlflow_uri)
    codecs: dict[str, Codec] = {}
    written: list[Path] = []
    with tio.open_read(shard, (storage or StorageConfig()).resolved()) as f:
        for sample in tio.iter_samples(f):
            if keys is not None and sample["__key__"] not in keys:
                continue
            if limit is not None and len(written) >= limit:
                break
            if CODES_SUFFIX not in sample or "json" not in sample:
                continue
            meta = json.loads(sample["json"])
            codes = np.load(io.BytesIO(sample[CODES_SUFFIX]), allow_pickle=False)
            name = model or meta["model"]["load_uri"]
            if name not in codecs:
                codecs[name] = Codec.from_pretrained(name, tracking_uri=uri)
            codec = codecs[name]
            audio = codec.decode(codes[None].astype(np.int64), n_q=n_q)[0]  # [1, T * hop] at 24 kHz
            audio = audio[..., : int(round(meta["duration"] * codec.sample_rate))]
            rate = sample_rate or int(meta["sample_rate"])
            if rate != codec.sample_rate:
                audio = resample(audio, codec.sample_rate, rate)
            out = Path(output_dir) / f"{sample['__key__'].replace(os.sep, '_')}.wav"
            written.append(write_audio(out, audio, rate))
    return written

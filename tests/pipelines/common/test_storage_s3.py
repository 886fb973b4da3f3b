"""Preparation and training pipeline from and to s3:// on a local moto server, through s3fs."""

from __future__ import annotations

import json
import logging

import pytest
import s3fs
from utils import write_mixed_folder

from pipelines.common.audio_decode import EMPTY, UNDECODABLE
from pipelines.common.shards import sample_key
from pipelines.common.storage import StorageConfig
from pipelines.data.config import load_data_config
from pipelines.data.dataset import build_segment_dataset, skip_counts
from pipelines.prepare.config import load_prepare_config
from pipelines.prepare.driver import run_prepare


def test_storage_repr_redacts_credentials():
    text = repr(StorageConfig(endpoint_url="http://127.0.0.1:1", key="AKIDSECRET", secret="shh-secret"))
    assert "AKIDSECRET" not in text and "shh-secret" not in text and "127.0.0.1" in text


@pytest.mark.slow
def test_prepare_and_read_on_s3(tmp_path, ray_local, moto_s3, s3_bucket, caplog, capsys, monkeypatch):
    caplog.set_level(logging.DEBUG)
    expected = write_mixed_folder(tmp_path / "music")
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto_s3})
    fs.put(str(tmp_path / "music"), f"{s3_bucket}/raw", recursive=True)

    # endpoint and credentials from the config (the environment's copies are removed for this run)
    secret = "testing-secret-key"
    storage = {"endpoint_url": moto_s3, "key": "testing-key-id", "secret": secret, "region": "us-east-1"}
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    cfg = load_prepare_config({"inputs": [f"s3://{s3_bucket}/raw"], "output": f"s3://{s3_bucket}/shards/v1",
                               "max_samples_per_shard": 4, "progress": False, "num_cpus": 0.5, "storage": storage})
    manifest = run_prepare(cfg)
    assert manifest["num_samples"] == len(expected) and manifest["num_shards"] == 2
    listed = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(f"{s3_bucket}/shards/v1"))
    assert listed == ["manifest.json", "rejected.jsonl", "shard-000000.tar", "shard-000001.tar"]
    rejected = [json.loads(x) for x in fs.cat_file(f"{s3_bucket}/shards/v1/rejected.jsonl").splitlines()]
    assert sorted((r["source"].rsplit("/", 1)[-1], r["reason"]) for r in rejected) == [
        ("broken.mp3", UNDECODABLE), ("empty.flac", EMPTY)]
    assert all(r["source"].startswith(f"s3://{s3_bucket}/raw/") for r in rejected)

    # read back through the training pipeline (endpoint from the environment this time)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    data_cfg = load_data_config({"shards": [f"s3://{s3_bucket}/shards/v1"], "segment_seconds": 1.0,
                                 "segments_per_track": 1, "val_fraction": 0.0})
    good, skipped = skip_counts(build_segment_dataset(data_cfg, split=None, keep_skipped=True))
    assert good == {sample_key(rel) for rel in expected if expected[rel][2] / expected[rel][0] >= 1.0}
    assert not skipped

    out = capsys.readouterr()
    logged = caplog.text + out.out + out.err + json.dumps(manifest) + repr(cfg) + repr(data_cfg)
    assert secret not in logged

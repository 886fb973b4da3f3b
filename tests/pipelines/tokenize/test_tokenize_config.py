"""Tokenization job config: shipped YAMLs load, bad keys/values fail naming the key, secrets stay out of params."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pipelines.common.config import ConfigError
from pipelines.common.tracking import loggable_params
from pipelines.tokenize.config import TokenizeConfig, config_hash, load_tokenize_config

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs" / "tokenize").glob("*.yaml"))
REQUIRED = ["model=tiny", "input=/data/shards", "output=/data/tokens"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    cfg = load_tokenize_config(path, REQUIRED)
    assert isinstance(cfg, TokenizeConfig)
    assert cfg.compute.actors >= 1 and cfg.compute.batch_size >= 1
    assert cfg.tracking.experiment


def test_overrides_apply():
    cfg = load_tokenize_config(CONFIGS[0], [*REQUIRED, "compute.actors=3", "n_q=4", "overwrite=true",
                                            "storage.endpoint_url=http://127.0.0.1:9000"])
    assert (cfg.compute.actors, cfg.n_q, cfg.overwrite) == (3, 4, True)
    assert cfg.storage.endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize("override, threads, ahead", [
    ([], 1, False),                                               # the default: one CPU, one torch thread
    (["compute.num_cpus=2"], 2, False),                           # torch takes every reserved CPU
    (["compute.num_cpus=4", "compute.torch_threads=2"], 2, True),  # two CPUs left for decoding
    (["compute.num_gpus=1", "compute.num_cpus=2"], 2, True),      # the GPU encodes
])
def test_actors_decode_ahead_only_where_the_encode_leaves_a_cpu_free(override, threads, ahead):
    compute = load_tokenize_config(CONFIGS[0], [*REQUIRED, *override]).compute
    assert (compute.threads, compute.encode_leaves_a_cpu_free) == (threads, ahead)


@pytest.mark.parametrize("override, key", [
    (["compute.actors=zero"], "compute.actors"),
    (["compute.actors=0"], "compute.actors"),
    (["compute.batch_seconds=-1"], "compute.batch_seconds"),
    (["compute.device=tpu"], "compute.device"),
    (["compute.niceness=-1"], "compute.niceness"),
    (["compute.niceness=20"], "compute.niceness"),
    (["compute.bogus=1"], "compute.bogus"),
    (["n_q=0"], "n_q"),
    (["model=models:/only-name/"], "model"),
    (["model=/no/such/checkpoint"], "model"),
    (["output=/data/shards"], "output"),
    (["tracking.experiment="], "tracking.experiment"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=f"^{re.escape(key)}: "):
        load_tokenize_config(CONFIGS[0], [*REQUIRED, *override])


def test_missing_mandatory_key():
    with pytest.raises(ConfigError, match="^model: required"):
        load_tokenize_config(None, ["input=a", "output=b"])


@pytest.mark.parametrize("uri", ["models:/codec@prod", "models:/codec/3", "models:/m-0123abcd",
                                 "runs:/0123abcd/model", "tiny"])
def test_model_uri_forms_accepted(uri):
    assert load_tokenize_config(None, [f"model={uri}", "input=a", "output=b"]).model == uri


def test_credentials_are_redacted_in_params():
    cfg = load_tokenize_config(None, [*REQUIRED, "storage.key=AKIA-SECRET-ID", "storage.secret=very-secret"])
    params = loggable_params(OmegaConf.structured(cfg))
    assert "AKIA-SECRET-ID" not in str(params) and "very-secret" not in str(params)
    assert params["compute.actors"] == "1"


def test_config_hash_depends_only_on_model_and_n_q():
    a = config_hash("models:/codec/1", 8)
    assert a == config_hash("models:/codec/1", 8)
    assert a != config_hash("models:/codec/2", 8) and a != config_hash("models:/codec/1", 4)
    assert len(a) == 16

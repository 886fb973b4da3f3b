"""Hugging Face Hub ids in the pipelines: the resolver pins ``ORG/NAME`` to its commit on the driver, the
tokenize job loads that commit in every actor, and the training config keeps Hub ids as given.

No network: repos are committed into a temporary Hugging Face cache (tests/hf_cache.py) and read with
``HF_HUB_OFFLINE=1``; the job runs as a subprocess whose Ray workers inherit ``HF_HUB_CACHE``.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from hf_cache import add_commit
from test_tokenize_job import REPO, job_env, read_token_shard, write_shards

from pipelines.common.models import model_ref_problem, resolve_model
from pipelines.train.config import absolute_path


@pytest.fixture(scope="module")
def two_codecs(tmp_path_factory):
    from codec import Codec

    root = tmp_path_factory.mktemp("hub-ckpts")
    small = dict(chunk_seconds=2.0, context_seconds=0.4, window_seconds=8.0)
    return (Codec.from_pretrained("tiny").configure(**small).save_pretrained(root / "a"),
            Codec.from_pretrained("tiny", overrides=["seed=7"]).configure(**small).save_pretrained(root / "b"))


def test_resolver_pins_a_hub_id_to_its_commit(hf_cache, two_codecs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = two_codecs
    c1 = add_commit(hf_cache, "acme/tiny-codec", first)
    c2 = add_commit(hf_cache, "acme/tiny-codec", second)
    assert model_ref_problem("acme/tiny-codec") is None and model_ref_problem("hf://acme/tiny-codec@v1") is None
    assert "Hugging Face model id" in model_ref_problem("hf://not-a-repo-id")
    ref = resolve_model("acme/tiny-codec")
    assert (ref.kind, ref.name, ref.version, ref.load_uri) == ("hub", "acme/tiny-codec", c2,
                                                               f"hf://acme/tiny-codec@{c2}")
    assert resolve_model(f"hf://acme/tiny-codec@{c1}").load_uri == f"hf://acme/tiny-codec@{c1}"
    with pytest.raises(FileNotFoundError, match="hf://nobody/nothing"):
        resolve_model("nobody/nothing")
    (tmp_path / "acme" / "tiny-codec").mkdir(parents=True)  # an existing directory wins over the Hub id
    assert resolve_model("acme/tiny-codec").kind == "dir"


def test_train_config_keeps_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert absolute_path("acme/tiny-codec") == "acme/tiny-codec"
    assert absolute_path("hf://acme/tiny-codec@main") == "hf://acme/tiny-codec@main"
    (tmp_path / "acme" / "tiny-codec").mkdir(parents=True)
    assert absolute_path("acme/tiny-codec") == str(tmp_path / "acme" / "tiny-codec")


@pytest.mark.slow
def test_tokenize_job_with_a_hub_id(hf_cache, two_codecs, tmp_path):
    """The job pins ``acme/tiny-codec`` to the newest commit; its actors load exactly that commit's weights."""
    from codec import Codec

    first, second = two_codecs
    add_commit(hf_cache, "acme/tiny-codec", first)
    head = add_commit(hf_cache, "acme/tiny-codec", second)
    encoded = write_shards(tmp_path / "in", [{"a": (3.0, 24000, 1, "flac"), "b": (2.0, 16000, 2, "wav")}])
    args = [sys.executable, "-m", "jobs.tokenize", "--config", str(REPO / "configs/tokenize/default.yaml"),
            "model=acme/tiny-codec", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "progress=false",
            "compute.torch_threads=1", "tracking.enabled=false"]
    env = {**job_env(), "HF_HUB_CACHE": str(hf_cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]

    pinned = f"hf://acme/tiny-codec@{head}"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"] == {"uri": "acme/tiny-codec", "load_uri": pinned, "kind": "hub",
                                 "name": "acme/tiny-codec", "version": head}
    tracks = read_token_shard((tmp_path / "out" / "corpus-000000.tar").read_bytes())
    import soundfile as sf

    reference = Codec.from_pretrained(second)
    for key in ("a", "b"):
        assert tracks[key]["json"]["model"]["load_uri"] == pinned
        audio, rate = sf.read(io.BytesIO(encoded[key]), dtype="float32", always_2d=True)
        np.testing.assert_array_equal(tracks[key]["codes.npy"], reference.encode(audio.T, sample_rate=rate)[0].numpy())

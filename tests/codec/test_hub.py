"""Hugging Face Hub ids: the reference rule, loading from the local HF cache offline, push with a model card.

No network: ``HF_HUB_OFFLINE=1`` (tests/conftest.py). Repos are put into a temporary Hugging Face cache in
the layout ``huggingface_hub`` downloads into (checked with ``scan_cache_dir``); pushes go through
``codec.publish.push_to_hub`` with an ``HfApi`` stand-in that commits into that cache (tests/hf_cache.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from hf_cache import CacheHub, add_commit

import codec
from codec.checkpoint import resolve_checkpoint_dir
from codec.hub import HubRef, parse_hub_ref
from codec.inference import Codec
from codec.publish import push_to_hub, stage_repo

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SMALL = dict(chunk_seconds=1.0, context_seconds=0.4, window_seconds=2.0)
EVAL = {"tracks": 3, "seconds": 95.0, "settings": [
    {"name": "codec_q1", "system": "codec", "n_q": 1, "kbps": 0.25,
     "metrics": {"mel_distance": {"mean": 1.234}, "si_sdr": {"mean": -3.5}}},
    {"name": "codec_q8", "system": "codec", "n_q": 8, "kbps": 2.0,
     "metrics": {"mel_distance": {"mean": 0.812}, "si_sdr": {"mean": 4.25}}}]}


def _clip(seconds: float = 1.2, seed: int = 3) -> torch.Tensor:
    return 0.3 * torch.randn(int(seconds * 24000), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """Two tiny checkpoint directories with different weights (the second has an eval.json)."""
    root = tmp_path_factory.mktemp("ckpts")
    first = Codec.from_pretrained("tiny").save_pretrained(root / "first")
    second = Codec.from_pretrained("tiny", overrides=["seed=7"]).save_pretrained(root / "second")
    (second / "eval.json").write_text(json.dumps(EVAL))
    return first, second


def codes_of(model: Codec) -> torch.Tensor:
    return model.configure(**SMALL).encode(_clip(), 24000)


# ------------------------------------------------------------------------------------------ reference rule
def test_reference_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hub_ref("acme/codec") == HubRef("acme/codec")
    assert parse_hub_ref("acme/codec@v1.0") == HubRef("acme/codec", "v1.0")
    assert parse_hub_ref("acme/codec", revision="abc") == HubRef("acme/codec", "abc")
    assert parse_hub_ref("hf://acme/codec@refs/pr/1") == HubRef("acme/codec", "refs/pr/1")
    for not_hub in ("tiny", "debug", "muq_xcodec", "models:/codec@prod", "runs:/abc/model", "./acme/codec",
                    "/abs/acme/codec", "a/b/c", "~/acme", "acme/co--dec", "acme/codec@"):
        assert parse_hub_ref(not_hub) is None, not_hub
    (tmp_path / "acme" / "codec").mkdir(parents=True)  # an existing directory wins over the Hub id ...
    assert parse_hub_ref("acme/codec") is None
    assert parse_hub_ref("hf://acme/codec") == HubRef("acme/codec")  # ... unless hf:// says otherwise
    with pytest.raises(ValueError, match="not a Hugging Face model id"):
        parse_hub_ref("hf://just-a-name")
    with pytest.raises(ValueError, match="give one revision"):
        parse_hub_ref("acme/x@v1", revision="v2")
    assert str(HubRef("acme/codec", "v1")) == "hf://acme/codec@v1"


def test_revision_is_for_hub_ids_only():
    with pytest.raises(ValueError, match="Hub ids only"):
        Codec.from_pretrained("tiny", revision="v1")
    with pytest.raises(ValueError, match="Hub ids only"):
        codec.get_model("tiny", revision="v1")


# -------------------------------------------------------------------------------------------- loading
def test_load_from_the_cache_offline_by_id_and_revision(hf_cache, tiny_dirs):
    from huggingface_hub import scan_cache_dir

    first, second = tiny_dirs
    c1 = add_commit(hf_cache, "acme/tiny-codec", first)
    c2 = add_commit(hf_cache, "acme/tiny-codec", second)
    add_commit(hf_cache, "acme/tiny-codec", first, branch="stable")
    scan = scan_cache_dir(hf_cache)
    assert not scan.warnings and [r.repo_id for r in scan.repos] == ["acme/tiny-codec"]
    assert os.environ["HF_HUB_OFFLINE"] == "1"

    expected_1, expected_2 = codes_of(Codec.from_pretrained(first)), codes_of(Codec.from_pretrained(second))
    assert not torch.equal(expected_1, expected_2)
    latest = Codec.from_pretrained("acme/tiny-codec")
    assert latest.name == f"hf://acme/tiny-codec@{c2}"  # pinned to the commit
    assert torch.equal(codes_of(latest), expected_2)
    assert torch.equal(codes_of(Codec.from_pretrained("acme/tiny-codec", revision=c1)), expected_1)
    assert torch.equal(codes_of(Codec.from_pretrained("hf://acme/tiny-codec@stable")), expected_1)
    assert torch.equal(codes_of(codec.get_model("acme/tiny-codec", revision="stable")), expected_1)
    assert resolve_checkpoint_dir("acme/tiny-codec").parent.name == "snapshots"
    listed = [m for m in codec.list_models(local_dirs=[]) if m.source == "hub"]
    assert {m.name for m in listed} >= {"hf://acme/tiny-codec@main"} and all(m.weights for m in listed)


def test_missing_from_the_offline_cache_is_a_clear_error(hf_cache):
    with pytest.raises(FileNotFoundError, match=r"hf://nobody/nothing.*(cache|offline|local)"):
        Codec.from_pretrained("nobody/nothing")
    with pytest.raises(FileNotFoundError, match="hf://nobody/nothing@v2"):
        codec.get_model("nobody/nothing", revision="v2")


@pytest.mark.slow
def test_cli_encodes_and_decodes_with_a_hub_id_from_the_user_cache(tmp_path, tiny_dirs):
    """A fresh process with HF_HOME set, as a user's: encode by Hub id, decode from the recorded pinned id."""
    first, _ = tiny_dirs
    commit = add_commit(tmp_path / "hf_home" / "hub", "acme/tiny-codec", first)
    audio = tmp_path / "in.wav"
    sf.write(audio, _clip(1.0).numpy(), 24000)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HF_HUB_CACHE", None)
    run = dict(env=env, capture_output=True, text=True, cwd=tmp_path)
    enc = subprocess.run([sys.executable, "-m", "codec", "encode", str(audio), "codes.npz", "--model",
                          "acme/tiny-codec"], **run)
    assert enc.returncode == 0, enc.stderr
    dec = subprocess.run([sys.executable, "-m", "codec", "decode", "codes.npz", "out.wav"], **run)
    assert dec.returncode == 0, dec.stderr
    from codec.codefile import CodeFile

    stored = CodeFile.load(tmp_path / "codes.npz")
    assert stored.model == f"hf://acme/tiny-codec@{commit}"
    np.testing.assert_array_equal(stored.codes, Codec.from_pretrained(first).encode_file(audio).codes)
    assert sf.info(tmp_path / "out.wav").frames == 24000


# -------------------------------------------------------------------------------------------- publishing
def test_push_round_trip_with_model_card(hf_cache, tiny_dirs):
    first, second = tiny_dirs
    hub = CacheHub(hf_cache)
    info = push_to_hub(second, "acme/pushed", api=hub, training_data="55 CC-BY tracks, ~100 min")
    assert [m for m, _ in hub.calls] == ["create_repo", "upload_folder"]
    loaded = Codec.from_pretrained("acme/pushed")
    assert loaded.name == f"hf://acme/pushed@{info.oid}"
    assert torch.equal(codes_of(loaded), codes_of(Codec.from_pretrained(second)))

    snapshot = resolve_checkpoint_dir("acme/pushed")
    repo_files = sorted(p.name for p in snapshot.parent.glob("*/*"))
    assert repo_files == ["README.md", "config.yaml", "eval.json", "model.safetensors", "teacher.safetensors"]
    card = (snapshot / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: muq-xcodec" in card
    assert 'Codec.from_pretrained("acme/pushed")' in card
    assert "| 1 | 250 | 25 |" in card and "| 8 | 2000 | 200 |" in card  # bitrate table: n_q, bits/s, tokens/s
    assert "55 CC-BY tracks" in card
    assert "| codec_q8 | 2 | 0.812 | 4.250 |" in card and "3 tracks, 1.6 min" in card  # from eval.json
    assert "residual VQ, 8 layers x 1024 codes" in card and "random MuQ" in card

    # Codec.push_to_hub: a new commit on the same repo; the previous one stays loadable by revision
    Codec.from_pretrained(first).push_to_hub("acme/pushed", api=hub)
    assert torch.equal(codes_of(Codec.from_pretrained("acme/pushed")), codes_of(Codec.from_pretrained(first)))
    assert torch.equal(codes_of(Codec.from_pretrained("acme/pushed", revision=info.oid)),
                       codes_of(Codec.from_pretrained(second)))
    card = (resolve_checkpoint_dir("acme/pushed") / "README.md").read_text()
    assert "No evaluation report" in card and "Not recorded" in card


def test_push_rejects_a_bad_repo_id(tiny_dirs, tmp_path):
    with pytest.raises(ValueError, match="ORG/NAME"):
        push_to_hub(tiny_dirs[0], "no-org", api=CacheHub(tmp_path))


def test_cli_push_local_dir_from_a_registered_mlflow_model(tiny_dirs, tmp_path, mlflow_sqlite, capsys):
    """`push models:/NAME@ALIAS --local-dir`: the repo folder, with the training run's data.* params in the card."""
    import mlflow

    from codec.__main__ import main
    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run

    _, second = tiny_dirs
    run_id = get_or_create_run(mlflow_sqlite, "hub", "train", artifact_location=default_artifact_location(mlflow_sqlite))
    mlflow.MlflowClient(mlflow_sqlite).log_param(run_id, "data.shards", "['s3://corpus/shards']")
    RunLogger(mlflow_sqlite, run_id).log_model_dir(second, registered_name="hub-codec", alias="prod")
    out = tmp_path / "repo"
    assert main(["push", "models:/hub-codec@prod", "acme/from-mlflow", "--local-dir", str(out)]) == 0
    assert "not uploaded" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "eval.json", "model.safetensors",
                                                     "teacher.safetensors"]
    card = (out / "README.md").read_text()
    assert f"From the training run `{run_id}`" in card and "`data.shards`: `['s3://corpus/shards']`" in card
    assert "models:/hub-codec@prod" in card
    assert main(["push", "models:/hub-codec@prod", "acme/x", "--local-dir", str(out)]) == 1  # not empty
    assert "not empty" in capsys.readouterr().err


def test_stage_with_discriminator_needs_one(tiny_dirs, tmp_path):
    with pytest.raises(FileNotFoundError, match="discriminator.safetensors"):
        stage_repo(tiny_dirs[0], tmp_path / "repo", with_discriminator=True)

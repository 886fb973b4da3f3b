"""Model references: one resolver, looked up only in the tracking store a job or command is pointed at."""

from __future__ import annotations

import tarfile

import pytest

from codec.inference import Codec
from pipelines.common.models import model_ref_problem
from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run


@pytest.mark.parametrize("ref", ["tiny", "debug", "muq_xcodec", "models:/codec@prod", "models:/codec/3",
                                 "runs:/abc/model"])
def test_every_reference_the_codec_accepts_is_accepted(ref):
    assert model_ref_problem(ref) is None


def test_models_uri_uses_the_configured_store_and_creates_none(tmp_path, monkeypatch):
    """Issue 17 item 3: ``jobs.evaluate`` resolved ``models:/`` against the default store and created
    ``./mlflow.db``; reading a model must use ``tracking.uri`` and never create a store."""
    import mlflow

    from pipelines.evaluate.config import load_evaluate_config
    from pipelines.evaluate.driver import plan_evaluate

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    folder = Codec.from_pretrained("tiny").save_pretrained(tmp_path / "ckpt")
    run_id = get_or_create_run(store, "register", "register", artifact_location=default_artifact_location(store))
    RunLogger(store, run_id).log_model_dir(folder, registered_name="stored-codec", alias="prod")
    shards = tmp_path / "shards"
    shards.mkdir()
    tarfile.open(shards / "eval-000000.tar", "w").close()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    plan = plan_evaluate(load_evaluate_config(None, ["model=models:/stored-codec@prod", f"shards={shards}",
                                                     f"tracking.uri={store}"]))
    assert plan.model.load_uri == "models:/stored-codec/1" and plan.geometry["n_codebooks"] == 8
    assert Codec.from_pretrained("models:/stored-codec@prod", tracking_uri=store).n_codebooks == 8
    with pytest.raises(FileNotFoundError, match="no MLflow store at sqlite:///mlflow.db"):
        Codec.from_pretrained("models:/stored-codec@prod")  # pointed at no store
    assert sorted(p.name for p in work.iterdir()) == []  # no ./mlflow.db, no ./mlruns

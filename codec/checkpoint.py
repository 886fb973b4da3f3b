"""Codec checkpoint directories and model URIs.

A checkpoint directory holds ``model.safetensors`` (generator weights), ``config.yaml`` (the fully
resolved codec config) and, only when the teacher is not a published model, ``teacher.safetensors``.
Nothing is pickled. ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and ``runs:/RUN_ID/PATH`` are
downloaded with MLflow (imported lazily, only for such URIs); Hugging Face Hub ids (``ORG/NAME``,
``hf://ORG/NAME@REVISION``) with ``huggingface_hub`` into its cache (:mod:`codec.hub`, which also gives the
rule that tells a Hub id from a local directory and a preset).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_model, save_model
from torch import nn

from codec.hub import download, parse_hub_ref
from codec.names import (  # noqa: F401 - re-exported: the names of a checkpoint folder
    CONFIG_FILE,
    DISCRIMINATOR_FILE,
    MLFLOW_SCHEMES,
    MODEL_FILE,
    TEACHER_FILE,
    is_mlflow_uri,
)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def model_store(tracking_uri: str | None = None) -> str:
    """The MLflow store that model URIs are read from: ``tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db``. Reading a model never creates a store: a sqlite file must already exist.

    Raises:
        FileNotFoundError: a ``sqlite:///`` store whose file does not exist.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no MLflow store at {uri}: point the tracking URI (tracking.uri, --tracking-uri "
                                "or MLFLOW_TRACKING_URI) at the store that holds the model")
    return uri


def find_model(client: Any, ref: str) -> Any:
    """The model a ``models:/`` reference (without the scheme) names, through an explicit ``MlflowClient``:
    ``NAME@ALIAS``, ``NAME/VERSION`` (a number, ``latest`` or a stage) or a logged-model id ``m-...``.

    Returns:
        An MLflow ``ModelVersion``, or a ``LoggedModel`` for a logged-model id.

    Raises:
        LookupError: a name without versions or a stage without a version.
        mlflow.exceptions.MlflowException: unknown model, alias or version.
    """
    if "@" in ref:
        return client.get_model_version_by_alias(*ref.split("@", 1))
    if "/" not in ref:
        return client.get_logged_model(ref)
    name, version = ref.split("/", 1)
    if version.isdigit():
        return client.get_model_version(name, version)
    if version == "latest":
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:
            raise LookupError(f"registered model {name!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    found = client.get_latest_versions(name, stages=[version])
    if not found:
        raise LookupError(f"registered model {name!r} has no version in stage {version!r}")
    return found[0]


def resolve_checkpoint_dir(name_or_uri: str | Path, dst: str | Path | None = None,
                           revision: str | None = None, tracking_uri: str | None = None) -> Path:
    """Return a local checkpoint directory for a path, an MLflow URI or a Hugging Face Hub id.

    MLflow artifacts are downloaded (to ``dst`` or a temporary folder) from :func:`model_store`, Hub repos
    into the Hugging Face cache (``dst`` unused; ``revision`` is the Hub branch, tag or commit); if the root
    does not hold ``config.yaml`` itself, the shallowest sub-folder that does is returned.

    Raises:
        FileNotFoundError: not a checkpoint directory, a Hub id that cannot be fetched, or no such MLflow store.
    """
    hub = parse_hub_ref(name_or_uri, revision)
    if revision is not None and hub is None:
        raise ValueError(f"revision={revision!r} applies to Hugging Face Hub ids only, not to {name_or_uri!r}")
    if hub is not None:
        local = download(hub)[0]
    elif is_mlflow_uri(str(name_or_uri)):
        import mlflow.artifacts
        from mlflow import MlflowClient

        store = model_store(tracking_uri)
        uri = str(name_or_uri)
        if uri.startswith("models:/"):  # MLflow would look the name up in its global registry: we do it here
            client = MlflowClient(tracking_uri=store, registry_uri=store)
            found = find_model(client, uri[len("models:/"):])
            uri = (client.get_model_version_download_uri(found.name, found.version) if hasattr(found, "version")
                   else found.artifact_location)
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=None if dst is None else str(dst),
                                                         tracking_uri=store, registry_uri=store))
    else:
        local = Path(name_or_uri)
    if local.is_dir() and not (local / CONFIG_FILE).is_file():
        found = sorted(local.rglob(CONFIG_FILE), key=lambda p: (len(p.parts), str(p)))
        if found:
            local = found[0].parent
    if not (local / CONFIG_FILE).is_file() or not (local / MODEL_FILE).is_file():
        raise FileNotFoundError(f"{name_or_uri} is not a codec checkpoint (need {CONFIG_FILE} and {MODEL_FILE})")
    return local


def save_weights(module: nn.Module, path: str | Path) -> Path:
    """Save a module's state dict as safetensors (shared tensors handled). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(module, str(path))
    return path


def load_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``module`` in place (strict: every key must match)."""
    missing, unexpected = load_model(module, str(path), strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match {type(module).__name__}: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    return module


def write_config(directory: str | Path, yaml_text: str) -> Path:
    """Write the resolved config YAML into a checkpoint directory."""
    path = Path(directory) / CONFIG_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml_text)
    return path

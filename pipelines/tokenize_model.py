"""Resolve the tokenizer model to one concrete version before any Ray work.

An alias (``models:/NAME@ALIAS``) can move while a job runs; every actor must load the same
weights, and every output must say which. :func:`resolve_model` turns the configured reference into
a :class:`ModelRef` whose ``load_uri`` is pinned (``models:/NAME/VERSION``, a run URI, an absolute
dir or a preset name).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LOGGED_MODEL_RE = re.compile(r"^models:/m-[0-9a-f]+$")


@dataclass(frozen=True)
class ModelRef:
    """A pinned model reference.

    Attributes:
        uri: as configured (e.g. ``models:/codec@prod``).
        load_uri: what the actors load (``models:/codec/3``, ``runs:/ID/PATH``, ``/abs/dir``, ``tiny``).
        kind: "registry", "logged_model", "run", "dir" or "preset".
        name: registered model name (registry only).
        version: registry version, run id, ``sha256:<weights digest>`` or ``preset:<name>``.
        run_id: the MLflow run that produced the model, when known.
        model_id: MLflow 3 logged-model id, when known (lineage link).
    """

    uri: str
    load_uri: str
    kind: str
    name: str | None = None
    version: str | None = None
    run_id: str | None = None
    model_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _weights_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.yaml")):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def resolve_model(uri: str, mlflow_uri: str | None = None) -> ModelRef:
    """Pin a model reference to one concrete version.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` (a number, ``latest`` or a stage),
            ``models:/MODEL_ID``,
            ``runs:/RUN_ID/PATH``, a checkpoint dir, or a preset name ("tiny", "debug").
        mlflow_uri: MLflow tracking/registry URI (registry and run URIs only).

    Returns:
        The pinned reference.

    Raises:
        mlflow.exceptions.MlflowException: unknown model, alias, version or run.
    """
    if uri.startswith(("models:/", "runs:/")):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
            client.get_run(run_id)  # fails early on an unknown run
            return ModelRef(uri=uri, load_uri=uri, kind="run", version=run_id, run_id=run_id)
        rest = uri[len("models:/"):]
        if "@" not in rest and "/" not in rest:  # an MLflow 3 logged model id
            lm = client.get_logged_model(rest)
            return ModelRef(uri=uri, load_uri=uri, kind="logged_model", name=lm.name, version=lm.model_id,
                            run_id=lm.source_run_id or None, model_id=lm.model_id)
        if "@" in rest:
            name, alias = rest.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, ver = rest.split("/", 1)
            if ver.isdigit():
                mv = client.get_model_version(name, ver)
            elif ver == "latest":
                versions = client.search_model_versions(f"name='{name}'")
                if not versions:
                    raise LookupError(f"registered model {name!r} has no versions")
                mv = max(versions, key=lambda v: int(v.version))
            else:
                found = client.get_latest_versions(name, stages=[ver])
                if not found:
                    raise LookupError(f"registered model {name!r} has no version in stage {ver!r}")
                mv = found[0]
        model_id = getattr(mv, "model_id", None) or None
        if model_id is None and LOGGED_MODEL_RE.match(mv.source or ""):  # registered from a logged model
            model_id = mv.source[len("models:/"):]
        return ModelRef(uri=uri, load_uri=f"models:/{mv.name}/{mv.version}", kind="registry", name=mv.name,
                        version=str(mv.version), run_id=mv.run_id or None, model_id=model_id)
    path = Path(uri)
    if path.is_dir():
        path = path.resolve()
        return ModelRef(uri=uri, load_uri=str(path), kind="dir", version=f"sha256:{_weights_digest(path)}")
    return ModelRef(uri=uri, load_uri=uri, kind="preset", version=f"preset:{uri}")


def load_pinned_codec(model: dict[str, Any], device: str = "auto", torch_threads: int | None = None,
                      mlflow_uri: str | None = None) -> tuple[Any, str]:
    """Load the codec a :class:`ModelRef` (as a dict) pins, inside a Ray actor.

    Args:
        model: ``asdict(ModelRef)``; ``load_uri`` is what is loaded.
        device: "auto", "cpu" or "cuda".
        torch_threads: intra-op threads (None leaves torch's default).
        mlflow_uri: tracking/registry URI for ``models:/`` and ``runs:/`` loads.

    Returns:
        (the codec in eval mode, the device it is on).
    """
    import torch

    from codec import Codec

    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if mlflow_uri and model["kind"] in ("registry", "logged_model", "run"):
        import mlflow

        mlflow.set_tracking_uri(mlflow_uri)
        mlflow.set_registry_uri(mlflow_uri)
    return Codec.from_pretrained(model["load_uri"], device=device).eval(), device

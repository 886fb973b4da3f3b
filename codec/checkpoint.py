"""Codec checkpoint directories and model URIs.

A checkpoint directory holds ``model.safetensors`` (generator weights), ``config.yaml`` (the fully
resolved codec config) and, only when the teacher is not a published model, ``teacher.safetensors``.
Nothing is pickled. ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` and ``runs:/RUN_ID/PATH`` are
downloaded with MLflow (imported lazily, only for such URIs); Hugging Face Hub ids (``ORG/NAME``,
``hf://ORG/NAME@REVISION``) with ``huggingface_hub`` into its cache (:mod:`codec.hub`, which also gives the
rule that tells a Hub id from a local directory and a preset).
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_model, save_model
from torch import nn

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TEACHER_FILE = "teacher.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"  # training / import only; inference never reads it
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_mlflow_uri(name: str) -> bool:
    """True for ``models:/...``, ``runs:/...`` and ``mlflow-artifacts:/...``."""
    return str(name).startswith(MLFLOW_SCHEMES)


def resolve_checkpoint_dir(name_or_uri: str | Path, dst: str | Path | None = None,
                           revision: str | None = None) -> Path:
    """Return a local checkpoint directory for a path, an MLflow URI or a Hugging Face Hub id.

    MLflow artifacts are downloaded (to ``dst`` or a temporary folder), Hub repos into the Hugging Face
    cache (``dst`` unused; ``revision`` is the Hub branch, tag or commit); if the root does not hold
    ``config.yaml`` itself, the shallowest sub-folder that does is returned.

    Raises:
        FileNotFoundError: not a checkpoint directory, or a Hub id that cannot be fetched.
    """
    from codec.hub import download, parse_hub_ref

    hub = parse_hub_ref(name_or_uri, revision)
    if revision is not None and hub is None:
        raise ValueError(f"revision={revision!r} applies to Hugging Face Hub ids only, not to {name_or_uri!r}")
    if hub is not None:
        local = download(hub)[0]
    elif is_mlflow_uri(str(name_or_uri)):
        import mlflow.artifacts

        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(name_or_uri),
                                                         dst_path=None if dst is None else str(dst)))
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

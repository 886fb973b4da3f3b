"""Names shared by every way a model is referenced: the files of a checkpoint folder and MLflow URI schemes.

The lowest module of the codec's model references (no codec imports): :mod:`codec.checkpoint` (folders, MLflow),
:mod:`codec.hub` (Hugging Face Hub ids) and :mod:`codec.publish` (push with a model card) all build on it.
"""

from __future__ import annotations

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.yaml"
TEACHER_FILE = "teacher.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"  # training / import only; inference never reads it
MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def is_mlflow_uri(name: str) -> bool:
    """True for ``models:/...``, ``runs:/...`` and ``mlflow-artifacts:/...``."""
    return str(name).startswith(MLFLOW_SCHEMES)

"""Model references, the one resolver every job uses: check, pin, fetch and load a codec reference.

A reference is a preset name (``tiny``, ``debug``, ``muq_xcodec``: whatever ``Codec.from_pretrained`` accepts),
a checkpoint directory, a Hugging Face Hub id (``ORG/NAME[@REVISION]``, ``hf://ORG/NAME[@REVISION]``; the rule
that tells it from a directory is :mod:`codec.hub`'s), or an MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``,
``models:/MODEL_ID``, ``runs:/RUN_ID/PATH``) looked up in the job's ``tracking:`` store, never in a store the
job was not pointed at (``codec.checkpoint.model_store``).

An alias can move while a job runs; every actor must load the same weights, and every output must say
which. :func:`resolve_model` turns the configured reference into a :class:`ModelRef` whose ``load_uri`` is
pinned (``models:/NAME/VERSION``, a run URI, ``hf://ORG/NAME@<commit sha>``, an absolute dir or a preset
name).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from codec.checkpoint import CONFIG_FILE, find_model, model_store, resolve_checkpoint_dir
from codec.config import ConfigError, frame_rate, hop_length, list_presets, load_codec_config
from codec.hub import is_hub_ref, pin_hub_ref
from pipelines.common.tracking import LOGGED_MODEL_TAG

LOGGED_MODEL_RE = re.compile(r"^models:/m-[0-9a-f]+$")
MODEL_URI_RE = re.compile(r"^(models:/[^/@]+(@[^/]+|/[^/]+)?|runs:/[^/]+/.+)$")
PRESET_ALIASES = {"debug": "tiny"}  # as codec.inference.PRESET_ALIASES (not imported: it loads torch models)


def presets() -> list[str]:
    """Preset names a model reference may be (the codec's presets and their aliases)."""
    return sorted([*list_presets(), *PRESET_ALIASES])


def model_ref_problem(model: str) -> str | None:
    """Why ``model`` is not a usable model reference (MLflow URI, Hub id, preset or checkpoint dir), or None."""
    m = model.strip()
    if not m:
        return "empty"
    if m.startswith(("models:/", "runs:/")):
        if not MODEL_URI_RE.match(m):
            return f"{m!r} is not models:/NAME@ALIAS, models:/NAME/VERSION, models:/MODEL_ID or runs:/RUN_ID/PATH"
    elif m.startswith("hf://") and not is_hub_ref(m):
        return f"{m!r} is not a Hugging Face model id (hf://ORG/NAME or hf://ORG/NAME@REVISION)"
    elif m not in presets() and "://" not in m and not Path(m).is_dir() and not is_hub_ref(m):
        return (f"{m!r} is not an MLflow model URI, a Hugging Face id (ORG/NAME), a preset {tuple(presets())} "
                "or an existing checkpoint dir")
    return None


@functools.lru_cache(maxsize=8)
def checkpoint_dir(ref: str, tracking_uri: str | None = None, key: str = "model") -> Path:
    """Local directory of a checkpoint reference (MLflow URIs are downloaded once per process).

    Raises:
        ConfigError: missing, not a codec checkpoint, or unknown to the store (the message starts with ``key``).
    """
    try:
        return resolve_checkpoint_dir(ref, tracking_uri=tracking_uri)
    except OSError as e:  # FileNotFoundError included
        raise ConfigError(f"{key}: {e}") from None
    except Exception as e:  # MLflow: unknown model / alias / run
        raise ConfigError(f"{key}: cannot fetch {ref}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def model_geometry(model: ModelRef, tracking_uri: str | None = None) -> dict[str, Any]:
    """Sample rate, hop, frame rate, codebooks and codebook size from the model's codec config (no weights
    loaded)."""
    if model.kind == "preset":
        cfg = load_codec_config(PRESET_ALIASES.get(model.load_uri, model.load_uri))
    else:
        cfg = load_codec_config(checkpoint_dir(model.load_uri, tracking_uri) / CONFIG_FILE)
    m = cfg.model
    return {"sample_rate": int(m.sample_rate), "hop_length": hop_length(cfg), "frame_rate": frame_rate(cfg),
            "n_codebooks": int(m.n_codebooks), "codebook_size": int(m.codebook_size)}


@dataclass(frozen=True)
class ModelRef:
    """A pinned model reference.

    Attributes:
        uri: as configured (e.g. ``models:/codec@prod``).
        load_uri: what the actors load (``models:/codec/3``, ``runs:/ID/PATH``, ``/abs/dir``, ``tiny``).
        kind: "registry", "logged_model", "run", "hub", "dir" or "preset".
        name: registered model name (registry) or Hub repo id (hub).
        version: registry version, run id, Hub commit sha, ``sha256:<weights digest>`` or ``preset:<name>``.
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
            ``runs:/RUN_ID/PATH``, a Hub id (``ORG/NAME[@REV]``, ``hf://ORG/NAME[@REV]``), a checkpoint dir,
            or a preset name (:func:`presets`).
        mlflow_uri: the job's tracking store (registry and run URIs only; see ``codec.checkpoint.model_store``).

    Returns:
        The pinned reference.

    Raises:
        mlflow.exceptions.MlflowException: unknown model, alias, version or run.
        FileNotFoundError: a Hub id that is neither reachable nor in the Hugging Face cache (offline).
    """
    if is_hub_ref(uri):  # pinned here, on the driver: every actor loads this one commit
        pinned = pin_hub_ref(uri)
        repo_id, _, sha = pinned[len("hf://"):].partition("@")
        return ModelRef(uri=uri, load_uri=pinned, kind="hub", name=repo_id, version=sha)
    if uri.startswith(("models:/", "runs:/")):
        from mlflow import MlflowClient

        store = model_store(mlflow_uri)
        client = MlflowClient(tracking_uri=store, registry_uri=store)
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
            client.get_run(run_id)  # fails early on an unknown run
            return ModelRef(uri=uri, load_uri=uri, kind="run", version=run_id, run_id=run_id)
        rest = uri[len("models:/"):]
        if "@" not in rest and "/" not in rest:  # an MLflow 3 logged model id
            lm = find_model(client, rest)
            return ModelRef(uri=uri, load_uri=uri, kind="logged_model", name=lm.name, version=lm.model_id,
                            run_id=lm.source_run_id or None, model_id=lm.model_id)
        mv = find_model(client, rest)
        model_id = getattr(mv, "model_id", None) or (mv.tags or {}).get(LOGGED_MODEL_TAG) or None
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
    return Codec.from_pretrained(model["load_uri"], device=device, tracking_uri=mlflow_uri).eval(), device

"""Model catalogue: which codecs exist here (presets, local checkpoint folders, the MLflow registry, codecs in
the Hugging Face cache).

``list_models()`` gathers their facts without loading any weights; ``get_model(name)`` returns a ready
:class:`~codec.inference.Codec` for a catalogue name, a checkpoint directory, an MLflow URI or a Hugging Face
Hub id (how a reference is read: :mod:`codec.hub`).

Local checkpoint folders are looked up in the directories given by ``local_dirs`` or, by default, in the
``MUQ_XCODEC_MODEL_DIRS`` environment variable (``os.pathsep``-separated). The MLflow registry is listed
when a tracking URI is given or ``MLFLOW_TRACKING_URI`` is set; a model version counts as a codec when its
files hold a codec ``config.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codec.checkpoint import CONFIG_FILE, MODEL_FILE

if TYPE_CHECKING:
    from codec.inference import Codec

MODEL_DIRS_ENV = "MUQ_XCODEC_MODEL_DIRS"
SOURCES = ("preset", "local", "mlflow", "hub")


@dataclass(frozen=True)
class ModelInfo:
    """Facts about one available codec.

    Attributes:
        name: what to pass to :func:`get_model` (preset name, folder path, ``models:/NAME@ALIAS`` or
            ``hf://ORG/NAME@REVISION``).
        source: ``preset``, ``local``, ``mlflow`` or ``hub`` (in the local Hugging Face cache).
        sample_rate: audio rate in Hz.
        frame_rate: code frames per second.
        n_codebooks: RVQ layers.
        codebook_size: entries per codebook.
        max_bitrate: bits per second with every layer.
        weights: True when trained weights are stored; a preset is built with random weights.
    """

    name: str
    source: str
    sample_rate: int
    frame_rate: float
    n_codebooks: int
    codebook_size: int
    max_bitrate: float
    weights: bool

    @property
    def bitrates(self) -> list[float]:
        """Bits per second when keeping 1..n_codebooks layers."""
        return [self.max_bitrate * k / self.n_codebooks for k in range(1, self.n_codebooks + 1)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_info(name: str, source: str, cfg: Any, weights: bool) -> ModelInfo:
    """The :class:`ModelInfo` of a codec config (``load_codec_config``); nothing is loaded."""
    from codec.config import bitrate, frame_rate

    model = cfg.model
    return ModelInfo(name=name, source=source, sample_rate=int(model.sample_rate), frame_rate=frame_rate(cfg),
                     n_codebooks=int(model.n_codebooks), codebook_size=int(model.codebook_size),
                     max_bitrate=bitrate(cfg, int(model.n_codebooks)), weights=weights)


def _preset_models() -> list[ModelInfo]:
    from codec.config import list_presets, load_codec_config

    return [model_info(name, "preset", load_codec_config(name), weights=False) for name in list_presets()]


def _local_dirs(local_dirs: Iterable[str | Path] | None) -> list[Path]:
    if local_dirs is None:
        local_dirs = [p for p in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if p]
    return [Path(d) for d in local_dirs]


def _local_models(local_dirs: Iterable[str | Path] | None) -> list[ModelInfo]:
    from codec.config import load_codec_config

    found = []
    for root in _local_dirs(local_dirs):
        candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
        for folder in candidates:
            if (folder / CONFIG_FILE).is_file() and (folder / MODEL_FILE).is_file():
                found.append(model_info(str(folder), "local", load_codec_config(folder / CONFIG_FILE), weights=True))
    return found


def _mlflow_models(tracking_uri: str | None) -> list[ModelInfo]:
    tracking_uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        return []
    import tempfile

    import mlflow.artifacts
    from mlflow import MlflowClient

    from codec.config import load_codec_config

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    found = []
    for registered in client.search_registered_models():
        for alias in ["latest", *sorted(registered.aliases)]:
            uri = f"models:/{registered.name}@{alias}"
            with tempfile.TemporaryDirectory() as tmp:
                try:  # only the small config file, never the weights
                    config = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{uri}/{CONFIG_FILE}", dst_path=tmp, tracking_uri=tracking_uri)
                    cfg = load_codec_config(config)
                except Exception:  # noqa: BLE001 - a registered model that is not a codec
                    continue
            found.append(model_info(uri, "mlflow", cfg, weights=True))
    return found


def _hub_models() -> list[ModelInfo]:
    """Codec repos in the local Hugging Face cache (every cached revision; nothing is downloaded)."""
    from huggingface_hub import constants, scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    from codec.config import load_codec_config

    try:
        cache = scan_cache_dir(constants.HF_HUB_CACHE)  # the cache snapshot_download uses (HF_HOME / HF_HUB_CACHE)
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for rev in sorted(repo.revisions, key=lambda r: r.commit_hash):
            names = {f.file_name for f in rev.files}
            if CONFIG_FILE not in names or MODEL_FILE not in names:
                continue
            try:
                cfg = load_codec_config(rev.snapshot_path / CONFIG_FILE)
            except Exception:  # noqa: BLE001 - a cached repo with some other config.yaml
                continue
            ref = f"hf://{repo.repo_id}@{'main' if 'main' in rev.refs else rev.commit_hash}"
            found.append(model_info(ref, "hub", cfg, weights=True))
    return found


def list_models(local_dirs: Iterable[str | Path] | None = None, tracking_uri: str | None = None) -> list[ModelInfo]:
    """All codecs available here: presets, local checkpoint folders, MLflow registered models and codecs in
    the local Hugging Face cache.

    Args:
        local_dirs: folders holding checkpoint directories (default: ``$MUQ_XCODEC_MODEL_DIRS``).
        tracking_uri: MLflow tracking/registry URI (default: ``$MLFLOW_TRACKING_URI``; none: registry skipped).

    Returns:
        One :class:`ModelInfo` per model, presets first.
    """
    return [*_preset_models(), *_local_models(local_dirs), *_mlflow_models(tracking_uri), *_hub_models()]


def get_model(name_or_uri: str | Path, device: str = "cpu", local_dirs: Iterable[str | Path] | None = None,
              tracking_uri: str | None = None, revision: str | None = None) -> Codec:
    """A ready codec for a preset name, a checkpoint directory, an MLflow URI or a Hugging Face Hub id
    (``ORG/NAME``, ``hf://ORG/NAME@REVISION``; the rule: :mod:`codec.hub`).

    A bare name that is none of these is looked up among the local checkpoint folders by folder name.
    ``revision`` (branch, tag or commit) applies to Hub ids only.

    Raises:
        FileNotFoundError: unknown name; the message lists the available models.
    """
    from codec.checkpoint import is_mlflow_uri
    from codec.config import list_presets
    from codec.hub import parse_hub_ref
    from codec.inference import PRESET_ALIASES, Codec

    name = str(name_or_uri)
    if parse_hub_ref(name, revision) is not None:
        return Codec.from_pretrained(name, device=device, revision=revision)
    if revision is not None:
        raise ValueError(f"revision={revision!r} applies to Hugging Face Hub ids only, not to {name!r}")
    if Path(name).is_dir() or is_mlflow_uri(name) or PRESET_ALIASES.get(name, name) in list_presets():
        return Codec.from_pretrained(name, device=device, tracking_uri=tracking_uri)
    for root in _local_dirs(local_dirs):
        if (root / name / CONFIG_FILE).is_file():
            return Codec.from_pretrained(root / name, device=device)
    available = [m.name for m in list_models(local_dirs, tracking_uri)]
    raise FileNotFoundError(f"unknown model {name!r}; available: {', '.join(available)} "
                            "(or a checkpoint directory, models:/NAME@ALIAS, models:/NAME/VERSION, runs:/..., "
                            "a Hugging Face id ORG/NAME or hf://ORG/NAME@REVISION)")


def format_table(models: list[ModelInfo]) -> str:
    """The catalogue as a text table, followed by the layers -> bitrate table."""
    header = ("name", "source", "rate", "frames/s", "layers", "codebook", "max bps", "weights")
    rows = [(m.name, m.source, str(m.sample_rate), f"{m.frame_rate:g}", str(m.n_codebooks),
             str(m.codebook_size), f"{m.max_bitrate:g}", "yes" if m.weights else "random") for m in models]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    if models:
        first = models[0]
        lines += ["", "n_q (layers) -> bitrate: " + ", ".join(
            f"{k}: {bps:g} bps" for k, bps in enumerate(first.bitrates, start=1))]
    return "\n".join(lines)

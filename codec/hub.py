"""Hugging Face Hub model references: download codec checkpoints (cached, offline-aware) and publish them.

A Hub repo holds the same files as a checkpoint directory (``config.yaml``, ``model.safetensors``, optionally
``teacher.safetensors`` / ``discriminator.safetensors``) plus a generated ``README.md`` model card. Only
``config.yaml`` and ``*.safetensors`` are ever downloaded (nothing pickled). Downloads go through
``huggingface_hub.snapshot_download``: the standard Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``), and
with ``HF_HUB_OFFLINE=1`` only the cache is read.

How a model reference is read (first rule that applies):

1. ``models:/...``, ``runs:/...``, ``mlflow-artifacts:/...``: MLflow.
2. ``hf://ORG/NAME`` or ``hf://ORG/NAME@REVISION``: the Hub, always.
3. A path that exists on disk: a local checkpoint directory (even when it looks like ``ORG/NAME``; write
   ``hf://ORG/NAME`` to mean the Hub).
4. A preset name (``tiny``, ``debug``, ``muq_xcodec``; presets never contain ``/``).
5. ``ORG/NAME`` or ``ORG/NAME@REVISION`` (exactly one ``/``, Hub repo-id characters): the Hub.

Anything else is an unknown model. A revision is a branch, tag or commit; loaded models are recorded
pinned to the commit (``hf://ORG/NAME@<sha>``).
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codec.checkpoint import CONFIG_FILE, DISCRIMINATOR_FILE, MODEL_FILE, TEACHER_FILE, is_mlflow_uri

HUB_SCHEME = "hf://"
# What a codec repo is downloaded with: the config and safetensors weights, never pickles or the model card.
DOWNLOAD_PATTERNS = (CONFIG_FILE, "*.safetensors")
EVAL_FILE = "eval.json"
CARD_FILE = "README.md"
# Hub repo ids: ORG/NAME, letters, digits, '-', '_', '.', at most 96 characters each, no '--' or '..'.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9_.-][\w.-]{0,95}$")


@dataclass(frozen=True)
class HubRef:
    """A Hugging Face Hub model reference.

    Attributes:
        repo_id: ``ORG/NAME``.
        revision: branch, tag or commit sha (None: the default branch).
    """

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return HUB_SCHEME + self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_ref(name: str | Path, revision: str | None = None) -> HubRef | None:
    """The :class:`HubRef` a model reference names, or None when it is not a Hub reference (module docstring).

    Args:
        name: ``hf://ORG/NAME[@REV]``, ``ORG/NAME[@REV]``, or anything else (then None).
        revision: revision given separately (e.g. ``from_pretrained(..., revision=)``).

    Raises:
        ValueError: ``hf://`` with an invalid repo id, or two different revisions.
    """
    if isinstance(name, Path):
        return None
    name = str(name)
    explicit = name.startswith(HUB_SCHEME)
    if not explicit and (is_mlflow_uri(name) or Path(name).expanduser().exists()):
        return None
    repo_id, at, inline = name[len(HUB_SCHEME):].partition("@") if explicit else name.partition("@")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or (at and not inline):
        if explicit:
            raise ValueError(f"{name!r} is not a Hugging Face model id (hf://ORG/NAME or hf://ORG/NAME@REVISION)")
        return None
    if inline and revision and inline != revision:
        raise ValueError(f"{name!r}: revision {revision!r} given as well; give one revision")
    return HubRef(repo_id, inline or revision or None)


def is_hub_ref(name: str | Path) -> bool:
    """True when ``name`` is read as a Hugging Face Hub model (module docstring); never raises."""
    try:
        return parse_hub_ref(name) is not None
    except ValueError:
        return False


def download(ref: HubRef, cache_dir: str | Path | None = None, token: str | bool | None = None) -> tuple[Path, HubRef]:
    """Fetch (or find in the cache) a codec repo snapshot.

    Args:
        ref: the repo and revision.
        cache_dir: Hugging Face cache (default: ``HF_HUB_CACHE``, i.e. ``~/.cache/huggingface/hub``).
        token: Hub token (default: the logged-in token / ``HF_TOKEN``).

    Returns:
        (the snapshot folder in the cache, the reference pinned to its commit).

    Raises:
        FileNotFoundError: unknown repo or revision, no access, or (offline) not in the cache.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(ref.repo_id, revision=ref.revision, allow_patterns=list(DOWNLOAD_PATTERNS),
                                        cache_dir=None if cache_dir is None else str(cache_dir), token=token))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FileNotFoundError(f"cannot get Hugging Face model {ref} ({type(e).__name__}: {first}); note: ORG/NAME "
                                "that is not an existing directory is read as a Hub model id") from None
    return folder, HubRef(ref.repo_id, folder.name)


def pin_hub_ref(name: str, revision: str | None = None) -> str:
    """``hf://ORG/NAME@<commit sha>`` for a Hub reference (downloads it into the cache unless already there).

    For jobs that must load the same weights on every worker: pin on the driver, load the pinned id.

    Raises:
        ValueError: not a Hub reference.
        FileNotFoundError: see :func:`download`.
    """
    ref = parse_hub_ref(name, revision)
    if ref is None:
        raise ValueError(f"{name!r} is not a Hugging Face Hub model reference")
    return str(download(ref)[1])


# -------------------------------------------------------------------------------------------------- publish
def stage_repo(source: str | Path, folder: str | Path, training_data: str | None = None,
               eval_json: str | Path | None = None, with_discriminator: bool = False,
               repo_id: str | None = None) -> Path:
    """Write the folder that :func:`push_to_hub` uploads: weights, ``config.yaml``, model card (``README.md``)
    and, when known, ``eval.json``.

    Args:
        source: checkpoint directory, MLflow URI (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/``)
            or Hub id.
        folder: where to write (created; must be empty or absent).
        training_data: free-text description of the training data for the card (default: the training
            run's ``data.*`` parameters when ``source`` is an MLflow model, else "not recorded").
        eval_json: evaluation report (``jobs.evaluate``'s ``eval.json``; default: ``eval.json`` in the source).
        with_discriminator: also publish ``discriminator.safetensors`` (for fine-tuning).
        repo_id: repo id named in the card's usage snippet.

    Returns:
        The folder.
    """
    import json

    from codec.checkpoint import resolve_checkpoint_dir
    from codec.config import load_codec_config
    from codec.model_card import render_model_card, training_data_from_mlflow

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty")
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        directory = resolve_checkpoint_dir(source, dst=tmp)
        names = [CONFIG_FILE, MODEL_FILE, TEACHER_FILE] + ([DISCRIMINATOR_FILE] if with_discriminator else [])
        if with_discriminator and not (directory / DISCRIMINATOR_FILE).is_file():
            raise FileNotFoundError(f"{source}: no {DISCRIMINATOR_FILE} to publish")
        for name in names:
            if (directory / name).is_file():
                shutil.copy2(directory / name, folder / name)
        eval_path = Path(eval_json) if eval_json else directory / EVAL_FILE
        if eval_json and not eval_path.is_file():
            raise FileNotFoundError(f"no such evaluation report: {eval_path}")
        evaluation = json.loads(eval_path.read_text()) if eval_path.is_file() else None
    if evaluation is not None:
        (folder / EVAL_FILE).write_text(json.dumps(evaluation, indent=2))
    if training_data is None and is_mlflow_uri(str(source)):
        training_data = training_data_from_mlflow(str(source))
    card = render_model_card(load_codec_config(folder / CONFIG_FILE), folder, repo_id=repo_id, source=str(source),
                             training_data=training_data, evaluation=evaluation)
    (folder / CARD_FILE).write_text(card)
    return folder


def push_to_hub(source: str | Path, repo_id: str, revision: str | None = None, private: bool | None = None,
                token: str | None = None, commit_message: str | None = None, training_data: str | None = None,
                eval_json: str | Path | None = None, with_discriminator: bool = False, api: Any = None) -> Any:
    """Publish a checkpoint directory or a registered MLflow model as a Hugging Face model repo.

    Creates the repo if needed, then uploads one commit with the files of :func:`stage_repo` (weights,
    ``config.yaml``, the generated model card, ``eval.json`` when known).

    Args:
        source: checkpoint directory or MLflow URI (see :func:`stage_repo`).
        repo_id: ``ORG/NAME`` on the Hub.
        revision: branch to commit to (default: the default branch).
        private: create the repo private (only when it does not exist yet).
        token: Hub token (default: the logged-in token / ``HF_TOKEN``).
        commit_message: default ``"Upload muq-xcodec codec"``.
        training_data: see :func:`stage_repo`.
        eval_json: see :func:`stage_repo`.
        with_discriminator: also publish the discriminator weights.
        api: a ``huggingface_hub.HfApi`` (default: a new one with ``token``).

    Returns:
        The ``huggingface_hub.CommitInfo`` of the upload (``.commit_url``, ``.oid``).
    """
    if parse_hub_ref(HUB_SCHEME + repo_id) is None or "@" in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repo id (ORG/NAME)")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = stage_repo(source, Path(tmp) / "repo", training_data=training_data, eval_json=eval_json,
                            with_discriminator=with_discriminator, repo_id=repo_id)
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), revision=revision,
                                 commit_message=commit_message or "Upload muq-xcodec codec")


def push(source: str, repo_id: str, revision: str | None = None, private: bool = False,
         training_data: str | None = None, eval_json: Path | None = None, with_discriminator: bool = False,
         local_dir: Path | None = None) -> None:
    """Publish a checkpoint directory or registered MLflow model to the Hugging Face Hub with a model card.

    Uploads config.yaml, the safetensors weights, a generated README.md (architecture, bitrate table,
    training data, evaluation table when an eval.json is known) and eval.json. Log in first
    (`huggingface-cli login` or HF_TOKEN).

    Args:
        source: checkpoint directory or MLflow URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH).
        repo_id: target Hub repo, ORG/NAME (created if missing).
        revision: branch to commit to (default: main).
        private: create the repo as private.
        training_data: description of the training data for the card (default: the training run's data.*
            parameters for an MLflow model).
        eval_json: evaluation report to include (default: eval.json inside the source, if any).
        with_discriminator: also publish discriminator.safetensors (for fine-tuning).
        local_dir: write the repo folder here and upload nothing (to review the card first).
    """
    if local_dir is not None:
        stage_repo(source, local_dir, training_data=training_data, eval_json=eval_json,
                   with_discriminator=with_discriminator, repo_id=repo_id)
        print(f"wrote {local_dir} (not uploaded)")
        return
    info = push_to_hub(source, repo_id, revision=revision, private=private or None, training_data=training_data,
                       eval_json=eval_json, with_discriminator=with_discriminator)
    print(f"pushed {source} to {getattr(info, 'commit_url', None) or repo_id}")

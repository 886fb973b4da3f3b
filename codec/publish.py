"""Publish a codec on the Hugging Face Hub: a checkpoint folder or a registered MLflow model, with a generated
model card (:mod:`codec.model_card`). Loading Hub models is :mod:`codec.hub`'s.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from codec.hub import CARD_FILE, EVAL_FILE, HUB_SCHEME, parse_hub_ref
from codec.names import CONFIG_FILE, DISCRIMINATOR_FILE, MODEL_FILE, TEACHER_FILE, is_mlflow_uri


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

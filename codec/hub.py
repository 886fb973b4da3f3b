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
from dataclasses import dataclass
from pathlib import Path

from codec.names import CONFIG_FILE, is_mlflow_uri

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

"""A local Hugging Face cache and an offline stand-in for the Hub's upload API (no network anywhere).

:func:`add_commit` writes a folder into the standard cache layout (``models--ORG--NAME/blobs``,
``snapshots/<commit>/`` symlinks, ``refs/<branch>``), exactly what ``huggingface_hub`` leaves after a
download; tests check the layout with ``huggingface_hub.scan_cache_dir``. :class:`CacheHub` takes the two
``HfApi`` calls ``push_to_hub`` makes (their keyword arguments are bound against the real ``HfApi``
signatures) and turns each upload into a new cached commit, so a push can be loaded back offline.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path
from types import SimpleNamespace


def add_commit(cache: Path, repo_id: str, folder: Path, branch: str = "main") -> str:
    """Cache ``folder``'s files as a new commit of ``repo_id`` on ``branch``. Returns the commit sha."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    files = sorted(p for p in folder.iterdir() if p.is_file())
    tree = hashlib.sha1()
    for f in files:
        tree.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    parent = (repo / "refs" / branch).read_text() if (repo / "refs" / branch).is_file() else ""
    commit = hashlib.sha1(tree.digest() + parent.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for f in files:
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / f.name
        if not link.exists():
            link.symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / branch).write_text(commit)
    return commit


class CacheHub:
    """``create_repo`` / ``upload_folder`` of ``huggingface_hub.HfApi``, committing into a local cache.

    Attributes:
        calls: (method, kwargs) in call order.
    """

    def __init__(self, cache: Path):
        from huggingface_hub import HfApi

        self.cache = cache
        self.calls: list[tuple[str, dict]] = []
        self._real = HfApi
        self.repos: set[str] = set()

    def _check(self, method: str, kwargs: dict) -> None:
        inspect.signature(getattr(self._real, method)).bind(self._real(), **kwargs)  # TypeError on a wrong call
        self.calls.append((method, kwargs))

    def create_repo(self, **kwargs):
        self._check("create_repo", kwargs)
        self.repos.add(kwargs["repo_id"])
        return SimpleNamespace(repo_id=kwargs["repo_id"])

    def upload_folder(self, **kwargs):
        self._check("upload_folder", kwargs)
        assert kwargs["repo_id"] in self.repos, "upload before create_repo"
        commit = add_commit(self.cache, kwargs["repo_id"], Path(kwargs["folder_path"]),
                            kwargs.get("revision") or "main")
        return SimpleNamespace(oid=commit, commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{commit}")

"""Helpers shared by the drills. The tokenize-job helpers (shard writers, readers, job env) are the ones of
``tests/jobs/test_tokenize_job.py``, loaded by path (``tests/jobs`` is not importable as ``jobs``: that name is
the package), so the drills never keep a second copy."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load(name: str, relpath: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / relpath)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


tok = _load("_drill_tokenize_job_helpers", "tests/jobs/test_tokenize_job.py")
write_shards = tok.write_shards
read_token_shard = tok.read_token_shard
tree_bytes = tok.tree_bytes
job_env = tok.job_env
audio_bytes = tok.audio_bytes


def visible_tree(root: Path) -> dict[str, bytes]:
    """Files under ``root`` minus hidden temp files (``.tmp-*``), which readers never list."""
    return {k: v for k, v in tree_bytes(root).items() if not Path(k).name.startswith(".")}


def assert_done_shards_valid(markers: dict[str, dict], read) -> int:
    """Every shard with a done marker is complete: its tar matches the marker's size and sha256, parses,
    and holds exactly the marker's keys (codes + json each). ``read(name) -> bytes``. Returns the count."""
    for name, m in markers.items():
        blob = read(name)
        assert len(blob) == m["bytes"] and hashlib.sha256(blob).hexdigest() == m["sha256"], f"{name} torn"
        tracks = read_token_shard(blob)
        assert sorted(tracks) == m["keys"], name
        assert all(set(t) == {"codes.npy", "json"} for t in tracks.values()), name
    return len(markers)


def tar_members(blob: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return tar.getnames()


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)

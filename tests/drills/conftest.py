"""Drill fixtures: the tiny test codec of tests/jobs/test_tokenize_job.py (short inference windows)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def drill_tiny_dir(tmp_path_factory):
    """The tiny preset saved with 2 s chunks / 0.4 s context (cheap on CPU), as the tokenize job tests use."""
    from codec import Codec

    codec = Codec.from_pretrained("tiny").configure(chunk_seconds=2.0, context_seconds=0.4, window_seconds=8.0)
    return codec.save_pretrained(tmp_path_factory.mktemp("drill-tiny-codec"))

"""A Ray task cancelled while it imports torch must not break the worker it ran on (Ray reuses workers)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import ray
import soundfile as sf
from utils import music_clip

from pipelines.data.dataset import SegmentStage
from pipelines.data.segments import SegmentSpec

INTERRUPT_DURING_IMPORT = """
import _thread, sys, threading, time
assert "torch" not in sys.modules
{setup}
fired = []
threading.Timer(0.2, lambda: (fired.append(time.perf_counter()), _thread.interrupt_main())).start()
try:
    {import_line}
    print("not interrupted")
except KeyboardInterrupt:
    print(f"interrupted, held {{time.perf_counter() - fired[0]:.2f}} s")
try:
    import torch
    torch.zeros(1)
    print("torch usable")
except Exception as e:
    print("torch broken:", type(e).__name__)
"""


def run_python(setup: str, import_line: str) -> str:
    """Run INTERRUPT_DURING_IMPORT in a fresh interpreter (torch not yet imported); its stdout."""
    code = INTERRUPT_DURING_IMPORT.format(setup=setup, import_line=import_line)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          check=True).stdout


def test_interrupt_during_import_is_held_until_the_import_is_done():
    # Ray's cancellation (interrupt_main) 0.2 s into a seconds-long import. A plain `import torch` is cut
    # where it stands (held ~0 s; depending on where, torch is left broken: "module functions cannot set
    # METH_CLASS"). Held, the interrupt comes after the import, and torch works.
    held = run_python("from pipelines.common.imports import import_uninterrupted",
                      'import_uninterrupted("torch")').splitlines()
    assert held[0].startswith("interrupted, held") and held[1] == "torch usable", held
    assert float(held[0].split()[2]) > 0.5, held


def test_cancelled_segment_task_leaves_its_worker_usable(ray_local, tmp_path):
    """A segment task cancelled in its first torch import (as Ray Data cancels tasks after ``take``/``limit``):
    the next task on the same worker must still cut segments."""
    buf = io.BytesIO()
    sf.write(buf, music_clip(3.0, 44100, 2, seed=1), 44100, format="FLAC")
    batch = {"key": np.array(["t"], dtype=object), "audio": np.array([buf.getvalue()], dtype=object),
             "skip_reason": np.array([""], dtype=object), "detail": np.array([""], dtype=object)}
    stage = SegmentStage(SegmentSpec(length=24000, per_track=2))
    started = tmp_path / "started"
    # A runtime env of its own: a fresh worker without torch, reused by both tasks.
    env = {"env_vars": {"HF_HUB_OFFLINE": "1", "FRESH_WORKER": uuid.uuid4().hex}}

    @ray.remote(num_cpus=1, max_retries=0, runtime_env=env)
    def cut(marker):
        import os

        if marker:
            with open(marker, "w") as f:
                f.write(f"{os.getpid()} {'torch' in sys.modules}")
        return os.getpid(), len(stage(batch)["audio"])

    ref = cut.remote(str(started))
    deadline = time.monotonic() + 120
    while not started.exists() or not started.read_text():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.02)
    time.sleep(0.3)  # inside the first torch import (it takes seconds)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=120)
    pid, had_torch = started.read_text().split()
    assert had_torch == "False"
    second_pid, segments = ray.get(cut.remote(""), timeout=300)
    assert second_pid == int(pid), "the second task must run on the cancelled task's worker"
    assert segments == 2

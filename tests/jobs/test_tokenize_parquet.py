"""Token datasets: the tokenize job's Parquet output (same tokens as the tar output, exactly-once, a killed run
resumes byte-identical), read back from either format as a Ray Dataset, packed into LM windows, and loaded
with ``datasets.load_dataset("parquet", ...)``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from test_tokenize_job import REPO, job_env, kill_after_first_shard, tree_bytes, write_shards

from pipelines.tokenize.config import load_tokenize_config
from pipelines.tokenize.dataset import pack_windows, read_token_file, read_tokens, token_files
from pipelines.tokenize.driver import OutputMismatchError, run_tokenize
from pipelines.tokenize.packing import PackingConfig, windows

LAYOUT = [{"s0a": (3.0, 24000, 1, "flac"), "s0b": (2.0, 16000, 2, "wav")},
          {"s1a": (2.5, 44100, 1, "wav")}]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from codec import Codec

    codec = Codec.from_pretrained("tiny").configure(chunk_seconds=2.0, context_seconds=0.4, window_seconds=8.0)
    return codec.save_pretrained(tmp_path_factory.mktemp("tiny-codec"))


def tokenize(tiny_dir, src, out, fmt: str):
    cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        f"model={tiny_dir}", f"input={src}", f"output={out}", f"output_format={fmt}", "progress=false",
        "compute.torch_threads=1", "tracking.enabled=false"])
    result = run_tokenize(cfg, log=lambda _: None)
    assert result.ok
    return cfg


@pytest.mark.slow
def test_parquet_and_tar_outputs_hold_the_same_tokens(ray_local, tiny_dir, tmp_path):
    import datasets

    write_shards(tmp_path / "in", LAYOUT)
    tokenize(tiny_dir, tmp_path / "in", tmp_path / "tar", "tar")
    cfg = tokenize(tiny_dir, tmp_path / "in", tmp_path / "pq", "parquet")
    files = token_files(str(tmp_path / "pq"))
    assert [os.path.basename(f) for f in files] == ["corpus-000000.parquet", "corpus-000001.parquet"]
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        "_done", "corpus-000000.parquet", "corpus-000001.parquet", "manifest.json", "stats.json"]

    tar_rows = {r["key"]: r for f in token_files(str(tmp_path / "tar")) for r in read_token_file(f, with_meta=True)}
    pq_rows = {r["key"]: r for f in files for r in read_token_file(f, with_meta=True)}
    assert sorted(pq_rows) == sorted(tar_rows) == ["s0a", "s0b", "s1a"]
    for key, row in pq_rows.items():
        assert row["codes"].dtype == np.int16 and row["codes"].shape[0] == 8
        np.testing.assert_array_equal(row["codes"], tar_rows[key]["codes"], err_msg=key)
        # same metadata, incl. source_meta and model; the config hash covers the output format (parquet only)
        pq_meta, tar_meta = dict(row["meta"]), dict(tar_rows[key]["meta"])
        assert pq_meta.pop("config_hash") != tar_meta.pop("config_hash"), key
        assert pq_meta == tar_meta, key
    assert pq_rows["s0b"]["meta"]["source_meta"] == {"title": "s0b"}
    assert pq_rows["s1a"]["meta"]["frames"] == 63 and pq_rows["s1a"]["meta"]["duration"] == pytest.approx(2.5)

    # the same files with Hugging Face datasets
    hf = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == 3 and hf.features["codes"] == datasets.List(datasets.List(datasets.Value("int16")))
    for rec in hf.with_format("numpy"):
        np.testing.assert_array_equal(np.stack(rec["codes"]), pq_rows[rec["key"]]["codes"])
        assert rec["model"]["load_uri"] == str(tiny_dir) and rec["frames"] == pq_rows[rec["key"]]["codes"].shape[1]

    # Ray Dataset from either format -> the same packed windows, ready for iter_torch_batches
    packing = PackingConfig(window=64, layout="flatten")
    expected = sorted(tuple(w) for r in pq_rows.values() for w in windows(r["codes"], packing))
    assert len(expected) == sum(-(-(8 * r["codes"].shape[1] + 2) // 64) for r in pq_rows.values())
    for out in ("tar", "pq"):
        ds = read_tokens(str(tmp_path / out))
        assert sorted(ds.to_pandas()["key"]) == ["s0a", "s0b", "s1a"]
        packed = pack_windows(ds, packing)
        got = [tuple(b) for batch in packed.iter_torch_batches(batch_size=4) for b in batch["input_ids"].tolist()]
        assert sorted(got) == expected, out
    batch = next(iter(pack_windows(read_tokens(str(tmp_path / "pq")),
                                   PackingConfig(window=16, layout="parallel")).iter_torch_batches(batch_size=2)))
    assert tuple(batch["input_ids"].shape) == (2, 8, 16) and str(batch["input_ids"].dtype) == "torch.int64"

    # switching the format of an existing output is refused (same marker paths, another config hash)
    tar_cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        f"model={tiny_dir}", f"input={tmp_path / 'in'}", f"output={cfg.output}", "progress=false",
        "tracking.enabled=false"])
    with pytest.raises(OutputMismatchError, match="config hash"):
        run_tokenize(tar_cfg, log=lambda _: None)


@pytest.mark.slow
def test_killed_parquet_run_resumes_byte_identical(ray_local, tiny_dir, tmp_path):
    layout = [{f"t{i}a": (4.0, 24000, 1, "flac"), f"t{i}b": (3.0, 22050, 2, "wav")} for i in range(3)]
    write_shards(tmp_path / "in", layout)
    args = [sys.executable, "-m", "jobs.tokenize", "--config", str(REPO / "configs/tokenize/default.yaml"),
            f"model={tiny_dir}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "output_format=parquet",
            "progress=false", "compute.torch_threads=1", "tracking.enabled=false"]
    env = {**job_env(), "OMP_NUM_THREADS": "1"}
    killed_at = kill_after_first_shard(args, tmp_path, env, tmp_path / "out")
    assert 1 <= killed_at < 3, "kill should land between shards"

    resumed = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"({killed_at} already done)" in resumed.stdout

    tokenize(tiny_dir, tmp_path / "in", tmp_path / "clean", "parquet")
    resumed_files = {k: v for k, v in tree_bytes(tmp_path / "out").items() if not os.path.basename(k).startswith(".")}
    assert resumed_files == tree_bytes(tmp_path / "clean")
    assert sorted(resumed_files) == [
        "_done/corpus-000000.json", "_done/corpus-000001.json", "_done/corpus-000002.json",
        "corpus-000000.parquet", "corpus-000001.parquet", "corpus-000002.parquet", "manifest.json", "stats.json"]
    keys = [r["key"] for f in token_files(str(tmp_path / "out")) for r in read_token_file(f)]
    assert sorted(keys) == sorted(f"t{i}{s}" for i in range(3) for s in "ab")  # each track exactly once


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(heading):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


@pytest.mark.slow
def test_readme_language_model_snippet_runs(ray_local, tiny_dir, tmp_path):
    """The README's "Training a language model on the tokens" block, verbatim, on a fresh Parquet output."""
    write_shards(tmp_path / "in", LAYOUT)
    tokenize(tiny_dir, tmp_path / "in", tmp_path / "demo" / "tokens-pq", "parquet")
    code = readme_block("#### Training a language model on the tokens")
    assert 'read_tokens("demo/tokens-pq")' in code
    env = {**job_env(), "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)}  # Ray Train's default storage: ~/ray_results
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loss = float(proc.stdout.split("final loss")[-1].split()[0])  # printed by the Train worker
    vocab = PackingConfig(window=256, layout="flatten").vocab_size(8)
    assert 0 < loss < np.log(vocab) + 1.0, proc.stdout[-2000:]  # a finite cross-entropy over the real vocabulary

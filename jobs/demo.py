"""End-to-end demo on the embedded default (local Ray, local MLflow sqlite store, local files).

    python -m jobs.demo                          # synthetic music corpus under demo/
    python -m jobs.demo --data /path/to/music    # your own music folder
    make demo [DATA=/path/to/music]

Runs the real jobs one after the other, each in its own process, exactly as a user would type them:
prepare shards -> train the tiny codec on Ray Train (registered in MLflow) -> tokenize the corpus with
the registered model -> decode one track back to a wav. A second run reuses what is done: prepared
shards are kept, training resumes from its last checkpoint (already finished: nothing to do), and
tokenization skips shards that are done.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REGISTERED_NAME = "muq-xcodec-tiny"


def _run(step: str, args: list[str], env: dict[str, str]) -> None:
    print(f"\n== {step}\n$ {shlex.join(['python', *args])}", flush=True)
    start = time.monotonic()
    subprocess.run([sys.executable, *args], env=env, check=True)
    print(f"== {step}: done in {time.monotonic() - start:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse ``[--data DIR] [--workdir DIR] [--steps N]`` and run the demo."""
    parser = argparse.ArgumentParser(prog="python -m jobs.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("DATA") or None,
                        help="folder of music files (default: a generated music-like corpus)")
    parser.add_argument("--workdir", default="demo", help="where everything is written (default: demo/)")
    parser.add_argument("--steps", type=int, default=60, help="training steps of the tiny codec")
    args = parser.parse_args(argv)

    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    shards, tokens, decoded = work / "shards", work / "tokens", work / "decoded"
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_REGISTRY_URI": tracking_uri,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
           "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    started = time.monotonic()

    music = Path(args.data).resolve() if args.data else work / "music"
    if not args.data:
        if any(music.glob("*.*")):
            print(f"== 1/5 corpus: reusing {music}")
        else:
            _run("1/5 corpus: generating music-like tracks",
                 ["-c", f"from pipelines.common.synthetic import write_corpus; write_corpus({str(music)!r}, num_tracks=8)"],
                 env)
    if (shards / "manifest.json").is_file():
        print(f"== 2/5 shards: reusing {shards}")
    else:
        _run("2/5 shards", ["-m", "jobs.prepare", "--config", "configs/prepare/default.yaml",
                            f"inputs=[{music}]", f"output={shards}", "max_samples_per_shard=4"], env)
    _run("3/5 training the tiny codec on Ray Train (MLflow-registered)",
         ["-m", "jobs.train", "--config", "configs/train/tiny_cpu.yaml", f"data.shards=[{shards}]",
          f"run.storage_path={work / 'ray_results'}", f"tracking.uri={tracking_uri}",
          f"tracking.register_name={REGISTERED_NAME}", f"schedule.max_steps={args.steps}"], env)
    model_uri = f"models:/{REGISTERED_NAME}@latest"
    _run("4/5 tokenizing the corpus with the registered model",
         ["-m", "jobs.tokenize", "--config", "configs/tokenize/default.yaml", f"model={model_uri}",
          f"input={shards}", f"output={tokens}", f"tracking.uri={tracking_uri}"], env)
    first_shard = sorted(tokens.glob("*.tar"))[0]
    _run("5/5 decoding one track back to audio",
         ["-m", "jobs.detokenize", str(first_shard), str(decoded), "--limit", "1", "--tracking-uri", tracking_uri],
         env)

    manifest = json.loads((tokens / "manifest.json").read_text())
    wavs = sorted(decoded.glob("*.wav"))
    print(f"\n== demo finished in {time.monotonic() - started:.0f} s")
    print(f"music:          {music}")
    print(f"shards:         {shards}  (manifest.json, rejected.jsonl)")
    print(f"model:          {model_uri}  (tracking store {tracking_uri})")
    print(f"tokens:         {tokens}  (manifest.json, stats.json; {len(manifest.get('shards', []))} shards)")
    if wavs:
        import soundfile as sf

        info = sf.info(str(wavs[0]))
        print(f"decoded wav:    {wavs[0]}  ({info.duration:.2f} s at {info.samplerate} Hz)")
    print(f"MLflow UI:      mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1")
    return 0


if __name__ == "__main__":
    sys.exit(main())

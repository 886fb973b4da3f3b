"""The Hugging Face model card (``README.md``) published with a codec: architecture, bitrates, training data,
evaluation.

Everything comes from the checkpoint itself (``config.yaml``, tensor shapes in the safetensors headers) and,
when known, from ``eval.json`` (``jobs.evaluate``) and the MLflow run that trained the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from codec.checkpoint import MODEL_FILE, TEACHER_FILE, is_mlflow_uri

TAGS = ["audio", "music", "neural-audio-codec", "audio-tokenizer", "muq-xcodec"]
EVAL_METRICS = {"mel_distance": "mel distance ↓", "stft_distance": "STFT distance ↓", "si_sdr": "SI-SDR (dB) ↑",
                "visqol": "ViSQOL ↑"}


def count_parameters(path: str | Path) -> int:
    """Number of values stored in a safetensors file (header only; nothing is loaded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is no dict)
            n = 1
            for d in f.get_slice(key).get_shape():
                n *= int(d)
            total += n
    return total


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _architecture(cfg: Any, folder: Path) -> list[str]:
    m, t = cfg.model, cfg.teacher
    hop = 1
    for r in m.encoder_rates:
        hop *= int(r)
    latent = m.latent_dim if m.latent_dim is not None else int(m.encoder_dim) * 2 ** len(m.encoder_rates)
    if t.source == "pretrained":
        teacher = f"`{t.model_id}` (published MuQ, frozen; downloaded by `muq`, not stored here)"
    else:
        teacher = f"{t.source} MuQ ({t.dim}-d, {t.depth} layers), frozen; weights in `{TEACHER_FILE}`"
    rows = [["sample rate", f"{int(m.sample_rate)} Hz, mono"],
            ["frame rate", f"{int(m.sample_rate) / hop:g} frames/s (hop {hop} samples)"],
            ["acoustic encoder", f"DAC-style, width {m.encoder_dim}, strides {list(m.encoder_rates)}, latent {latent}"],
            ["semantic teacher", teacher],
            ["quantizer", f"residual VQ, {m.n_codebooks} layers x {m.codebook_size} codes "
                          f"(factorized, {m.codebook_dim}-d lookups)"],
            ["decoder", f"DAC-style, width {m.decoder_dim}, rates {list(m.decoder_rates)}"],
            ["generator parameters", f"{count_parameters(folder / MODEL_FILE) / 1e6:.1f} M"]]
    return _table(["", ""], rows)


def _bitrates(cfg: Any) -> list[str]:
    from codec.config import bitrate, frame_rate

    rate = frame_rate(cfg)
    rows = [[str(k), f"{bitrate(cfg, k):g}", f"{rate * k:g}"] for k in range(1, int(cfg.model.n_codebooks) + 1)]
    return _table(["n_q (layers)", "bits/s", "tokens/s"], rows)


def _evaluation(evaluation: dict[str, Any]) -> list[str]:
    settings = evaluation.get("settings", [])
    metrics = [m for m in EVAL_METRICS if any(m in s.get("metrics", {}) for s in settings)]
    rows = []
    for s in settings:
        cells = [str(s.get("name", "")), f"{float(s.get('kbps', float('nan'))):.3g}"]
        for m in metrics:
            summary = s.get("metrics", {}).get(m, {})
            mean = summary.get("mean") if isinstance(summary, dict) else summary
            cells.append("n/a" if mean is None or mean != mean else f"{float(mean):.3f}")
        rows.append(cells)
    tracks = evaluation.get("tracks")
    seconds = evaluation.get("seconds")
    scope = f"{tracks} tracks" + (f", {float(seconds) / 60:.1f} min of audio" if seconds else "") if tracks else ""
    lines = [f"Means over the evaluation set{f' ({scope})' if scope else ''}, from `eval.json` "
             "(`python -m jobs.evaluate`):", ""]
    return lines + _table(["setting", "kbps", *(EVAL_METRICS[m] for m in metrics)], rows)


def render_model_card(cfg: Any, folder: Path, repo_id: str | None = None, source: str | None = None,
                      training_data: str | None = None, evaluation: dict[str, Any] | None = None) -> str:
    """The model card text (YAML front matter + Markdown).

    Args:
        cfg: the codec config (``load_codec_config``).
        folder: the folder holding the weights (for the parameter count).
        repo_id: Hub id used in the usage examples.
        source: where the weights came from; an MLflow URI is named in the card, a local path is not.
        training_data: training data description (None: "not recorded").
        evaluation: content of ``eval.json`` (None: no evaluation section table).
    """
    from huggingface_hub import ModelCardData

    repo = repo_id or "ORG/NAME"
    front = ModelCardData(library_name="muq-xcodec", tags=list(TAGS)).to_yaml()
    lines = [
        "---", front, "---", "",
        f"# {repo_id or cfg.name}", "",
        f"`{cfg.name}`: a muq-xcodec semantic music codec (the X-Codec 1.0 recipe of "
        "[muq-xcodec](https://github.com/dzq84/muq-xcodec): a DAC-style acoustic encoder fused with a frozen MuQ "
        "music model before a residual VQ). It turns music into discrete tokens for audio language models and "
        "decodes tokens back to audio; any prefix of the RVQ layers is usable.", "",
        "## Usage", "",
        "```python",
        "from codec import Codec",
        "",
        f'codec = Codec.from_pretrained("{repo}")  # or revision="<tag or commit>"',
        "codes = codec.encode(audio, sample_rate=44100)  # int16 [B, n_q, T]",
        "audio_24k = codec.decode(codes)  # [B, 1, T * hop]",
        "```", "",
        "```bash",
        f"muq-xcodec encode song.flac song.npz --model {repo} --n-q 4",
        "muq-xcodec decode song.npz song.wav",
        "```", "",
        "## Architecture", "", *_architecture(cfg, folder), "",
        "## Bitrates", "", *_bitrates(cfg), "",
        "## Training data", "", training_data or "Not recorded with this checkpoint.", "",
        "## Evaluation", "",
        *(_evaluation(evaluation) if evaluation else ["No evaluation report was published with this checkpoint."]),
        "",
    ]
    if source and is_mlflow_uri(source):  # a local path would only leak the publisher's file layout
        lines += ["## Provenance", "", f"Published from the MLflow model `{source}`.", ""]
    return "\n".join(lines)


def training_data_from_mlflow(uri: str) -> str | None:
    """The ``data.*`` parameters of the run that produced an MLflow model, as a Markdown list (None if unknown)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        if uri.startswith("runs:/"):
            run_id = uri[len("runs:/"):].split("/", 1)[0]
        else:
            rest = uri[len("models:/"):]
            if "@" in rest:
                name, alias = rest.split("@", 1)
                run_id = client.get_model_version_by_alias(name, alias).run_id
            elif "/" in rest:
                name, version = rest.split("/", 1)
                run_id = client.get_model_version(name, version).run_id
            else:
                return None
        params = client.get_run(run_id).data.params if run_id else {}
    except Exception:  # noqa: BLE001 - no run recorded / not reachable: the card says "not recorded"
        return None
    data = {k: v for k, v in sorted(params.items()) if k.startswith("data.")}
    if not data:
        return None
    return "\n".join([f"From the training run `{run_id}`:", "", *(f"- `{k}`: `{v}`" for k, v in data.items())])

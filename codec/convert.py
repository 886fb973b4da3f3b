"""Import and export of the original muq-xcodec checkpoint layout (``dzq84/muq-xcodec``, Lightning).

The original ``CODEC`` LightningModule stores one flat ``state_dict``:

==============================  ===============================================  ================================
original key prefix             what it is                                        here
==============================  ===============================================  ================================
``encoder.`` / ``decoder.``     DAC-layout encoder / decoder                      same names in ``XCodec``
``quantizer.quantizers.N.``     DAC factorized RVQ (``in_proj``/``out_proj``/     same names in ``XCodec``
                                ``codebook``)
``fc_prior``                    fusion Linear                                     ``fc_prior``
``fc_post1``                    semantic head (-> MuQ features)                   ``fc_post_s``
``fc_post2``                    acoustic head (-> decoder)                        ``fc_post_a``
``generator.0/1/2.``            the same encoder / quantizer / decoder again      checked equal, not stored twice
                                (``nn.ModuleList`` alias in the original)
``semantic.``                   the MuQ inside the checkpoint                     ``teacher.safetensors``
``discriminator.``              DAC MPD + MRD discriminator                       ``discriminator.safetensors``
                                                                                  (only with ``with_discriminator``)
==============================  ===============================================  ================================

Weight norm: the original uses ``torch.nn.utils.weight_norm`` (``weight_g`` / ``weight_v``); we use
parametrizations (``parametrizations.weight.original0`` / ``original1``). Both name ``g`` (magnitude) and
``v`` (direction) with the same shapes, so the mapping is a rename. Either spelling is accepted on import;
export writes the original (old) spelling, which the parametrized modules also load.

The MuQ weights are kept from the checkpoint, not replaced by the published model: the original applied
its ``init_weights`` (truncated normal on every ``Conv1d``) after loading MuQ, and trained with MuQ in
train mode (batch-norm statistics moved), so its teacher differs from ``OpenMuQ/MuQ-large-msd-iter``. The
MuQ architecture (its ``config.json``, including the mel normalisation statistics that are not tensors)
is recorded in our ``config.yaml`` as ``teacher.muq_config`` with ``teacher.source: imported``.

Nothing is unpickled beyond tensors and plain containers (``torch.load(weights_only=True)``) unless the
caller explicitly trusts the file.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from codec.builders import build_muq
from codec.checkpoint import DISCRIMINATOR_FILE

DEFAULT_MUQ = "OpenMuQ/MuQ-large-msd-iter"
# Original head name -> ours.
HEADS = {"fc_prior": "fc_prior", "fc_post1": "fc_post_s", "fc_post2": "fc_post_a"}
GENERATOR_ROOTS = ("encoder", "decoder", "quantizer", *HEADS)
# The original registers encoder/quantizer/decoder a second time in ``self.generator = nn.ModuleList(...)``.
ALIASES = {"generator.0.": "encoder.", "generator.1.": "quantizer.", "generator.2.": "decoder."}
TEACHER_PREFIX = "semantic."
DISCRIMINATOR_PREFIX = "discriminator."
# The original trains its discriminator with DAC's defaults: Discriminator() (no MSD).
ORIGINAL_PERIODS = [2, 3, 5, 7, 11]
ORIGINAL_FFT_SIZES = [2048, 1024, 512]
# The original architecture: quantizer dropout off in its training, none of the learning defences of our presets.
ORIGINAL_ARCHITECTURE = {"quantizer_dropout": 0.0, "init": "trunc_normal", "semantic_norm": False,
                         "latent_norm": "none", "codebook_init_from_data": False, "dead_code_steps": 0,
                         "dc_block_seconds": 0.0}
ORIGINAL_INFERENCE = {"mode": "reference", "chunk_seconds": 10.0, "context_seconds": 2.0, "window_seconds": 30.0}
# (reference encoding ignores context_seconds; decoding keeps 2 s of code context, close to decoding at once)
# Written as ``pytorch-lightning_version`` on export: the original's environment.yml pins lightning 2.3.3.
LIGHTNING_VERSION = "2.3.3"
_OLD_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_NEW_WN = {v: k for k, v in _OLD_WN.items()}


class CheckpointError(ValueError):
    """The source checkpoint cannot be converted; the message names the offending key or file."""


@dataclass
class ConversionReport:
    """Where every source tensor went.

    Attributes:
        mapped: destination -> source keys written there (``generator``, ``teacher``, ``discriminator``).
        dropped: reason -> source keys (or ``entry/path`` of tensors outside the state dict) not written.
        notes: human-readable remarks (geometry, numerics differences).
    """

    mapped: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_mapped(self) -> int:
        return sum(len(v) for v in self.mapped.values())

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def summary(self) -> str:
        """A few lines: counts per destination and per drop reason, then the notes."""
        lines = [f"mapped {self.n_mapped} tensors, dropped {self.n_dropped}"]
        lines += [f"  -> {dest}: {len(keys)}" for dest, keys in self.mapped.items()]
        lines += [f"  dropped ({reason}): {len(keys)}" for reason, keys in self.dropped.items()]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ loading
def load_checkpoint(path: str | Path, trust: bool = False) -> dict[str, Any]:
    """Read a Lightning checkpoint without executing pickled code.

    Args:
        path: ``.ckpt`` file written by ``torch.save``.
        trust: allow a full unpickle when the file holds more than tensors and plain containers. UNSAFE:
            unpickling runs arbitrary code from the file; only for files you produced yourself.

    Returns:
        The checkpoint dict (``state_dict`` plus Lightning's training state).

    Raises:
        CheckpointError: unreadable file, or it needs a full unpickle and ``trust`` is False.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such checkpoint file: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"{path}: refusing to load: the file holds objects other than tensors and plain containers, "
                f"and loading it would execute code from the file ({first}). Re-save its state_dict with "
                "plain tensors, or pass --trust-checkpoint if you produced the file yourself (UNSAFE)") from None
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({str(e).strip().splitlines()[0]})") from None
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return dict(ckpt)


def split_checkpoint(ckpt: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict[str, list[str]]]:
    """(state_dict, {top-level entry: tensor paths}) for a Lightning checkpoint or a bare state dict.

    Everything outside ``state_dict`` (optimizer states, schedulers, loops, callbacks) is training state of
    the original run; its tensors are listed so the caller can report them as dropped.
    """
    if "state_dict" in ckpt:
        state, rest = ckpt["state_dict"], {k: v for k, v in ckpt.items() if k != "state_dict"}
    elif ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        state, rest = ckpt, {}
    else:
        raise CheckpointError("checkpoint has no 'state_dict' entry and is not a state dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"state_dict entry {bad[0]!r} is not a named tensor")
    return dict(state), {k: list(_tensor_paths(v, str(k))) for k, v in rest.items()}


def _tensor_paths(obj: Any, prefix: str):
    if isinstance(obj, Tensor):
        yield prefix
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _tensor_paths(v, f"{prefix}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _tensor_paths(v, f"{prefix}/{i}")


# --------------------------------------------------------------------------------------------- key names
def to_new_weight_norm(key: str) -> str:
    """``a.weight_g`` -> ``a.parametrizations.weight.original0`` (``weight_v`` -> ``original1``)."""
    head, _, leaf = key.rpartition(".")
    return f"{head}.{_OLD_WN[leaf]}" if leaf in _OLD_WN else key


def to_old_weight_norm(key: str) -> str:
    """Inverse of :func:`to_new_weight_norm`."""
    for new, old in _NEW_WN.items():
        if key.endswith("." + new):
            return key[: -len(new)] + old
    return key


def original_to_ours(key: str) -> str:
    """Generator key in the original layout (either weight-norm spelling) -> our ``XCodec`` key."""
    root, _, rest = key.partition(".")
    return to_new_weight_norm(f"{HEADS.get(root, root)}.{rest}")


def ours_to_original(key: str) -> str:
    """Our ``XCodec`` key -> the original layout (old weight-norm spelling)."""
    inverse = {v: k for k, v in HEADS.items()}
    root, _, rest = key.partition(".")
    return to_old_weight_norm(f"{inverse.get(root, root)}.{rest}")


def discriminator_original_to_ours(key: str) -> str:
    """DAC discriminator key (``discriminators.i.convs.j.0.weight_g``) -> ours (no activation wrapper)."""
    key = re.sub(r"^(discriminators\.\d+\.convs\.\d+)\.0\.", r"\1.", key)
    key = re.sub(r"^(discriminators\.\d+\.band_convs\.\d+\.\d+)\.0\.", r"\1.", key)
    return to_new_weight_norm(key)


def discriminator_ours_to_original(key: str) -> str:
    """Inverse of :func:`discriminator_original_to_ours` (old weight-norm spelling)."""
    key = re.sub(r"^(discriminators\.\d+\.convs\.\d+)\.", r"\1.0.", key)
    key = re.sub(r"^(discriminators\.\d+\.band_convs\.\d+\.\d+)\.", r"\1.0.", key)
    return to_old_weight_norm(key)


# ---------------------------------------------------------------------------------------------- geometry
def _get(state: Mapping[str, Tensor], key: str) -> Tensor:
    """A weight-norm direction or plain tensor under either spelling."""
    for candidate in (key, to_new_weight_norm(key), to_old_weight_norm(key)):
        if candidate in state:
            return state[candidate]
    raise CheckpointError(f"missing key {key!r} (needed to read the model geometry)")


def _has(state: Mapping[str, Tensor], key: str) -> bool:
    return any(k in state for k in (key, to_new_weight_norm(key)))


def infer_geometry(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Model geometry (``model`` config section + ``semantic_dim``) read from original-layout tensor shapes.

    Strided encoder convs have kernel ``2 * stride`` and transposed decoder convs ``2 * rate``.
    """
    encoder_dim = _get(state, "encoder.block.0.weight_v").shape[0]
    encoder_rates, i = [], 1
    while _has(state, f"encoder.block.{i}.block.4.weight_v"):
        encoder_rates.append(_get(state, f"encoder.block.{i}.block.4.weight_v").shape[-1] // 2)
        i += 1
    decoder_dim = _get(state, "decoder.model.0.weight_v").shape[0]
    decoder_rates, i = [], 1
    while _has(state, f"decoder.model.{i}.block.1.weight_v"):
        decoder_rates.append(_get(state, f"decoder.model.{i}.block.1.weight_v").shape[-1] // 2)
        i += 1
    n_codebooks = 0
    while f"quantizer.quantizers.{n_codebooks}.codebook.weight" in state:
        n_codebooks += 1
    codebook_size, codebook_dim = _get(state, "quantizer.quantizers.0.codebook.weight").shape
    latent_dim = _get(state, "fc_post2.weight").shape[0]
    if not encoder_rates or not decoder_rates:
        raise CheckpointError("cannot find the encoder / decoder blocks (encoder.block.1.block.4, decoder.model.1)")
    return {
        "encoder_dim": int(encoder_dim), "encoder_rates": encoder_rates,
        "latent_dim": None if latent_dim == encoder_dim * 2 ** len(encoder_rates) else int(latent_dim),
        "decoder_dim": int(decoder_dim), "decoder_rates": decoder_rates, "n_codebooks": n_codebooks,
        "codebook_size": int(codebook_size), "codebook_dim": int(codebook_dim),
        "semantic_dim": int(_get(state, "fc_post1.weight").shape[0]),
    }


def infer_discriminator(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Discriminator config section for DAC's ``Discriminator()`` weights (keys without the prefix).

    Periods and FFT sizes are not visible in the weights; the original uses DAC's defaults, checked here
    against the number of period (``convs``) and STFT (``band_convs``) sub-discriminators.
    """
    kinds: dict[int, str] = {}
    for key in state:
        m = re.match(r"discriminators\.(\d+)\.(convs|band_convs)\.", key)
        if m:
            kinds[int(m.group(1))] = m.group(2)
    periods = [i for i, k in kinds.items() if k == "convs"]
    stfts = [i for i, k in kinds.items() if k == "band_convs"]
    if len(periods) != len(ORIGINAL_PERIODS) or len(stfts) != len(ORIGINAL_FFT_SIZES) \
            or sorted(kinds) != list(range(len(kinds))) or max(periods) > min(stfts):
        raise CheckpointError(
            f"discriminator: expected DAC's {len(ORIGINAL_PERIODS)} period + {len(ORIGINAL_FFT_SIZES)} multi-band "
            f"STFT sub-discriminators (no MSD), found {len(periods)} period / {len(stfts)} STFT at "
            f"{sorted(kinds)}; cannot map it faithfully (omit --with-discriminator)")
    n_bands = len({m.group(1) for k in state if (m := re.match(r"discriminators\.\d+\.band_convs\.(\d+)\.", k))})
    from codec.config import DiscriminatorConfig

    bands = DiscriminatorConfig().bands
    if n_bands != len(bands):
        raise CheckpointError(f"discriminator: {n_bands} STFT bands, ours has {len(bands)}; cannot map it faithfully")
    return {"periods": list(ORIGINAL_PERIODS), "fft_sizes": list(ORIGINAL_FFT_SIZES), "bands": bands,
            "period_channels": int(_get(state, f"discriminators.{periods[0]}.convs.0.0.weight_v").shape[0]),
            "stft_channels": int(_get(state, f"discriminators.{stfts[0]}.band_convs.0.0.0.weight_v").shape[0])}


# --------------------------------------------------------------------------------------------------- MuQ
def read_muq_config(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """The MuQ architecture config (MuQ's ``config.json`` contents) as a plain dict.

    Args:
        source: a mapping, a ``config.json`` path, a directory holding one, or a Hugging Face model id
            (read from the local Hub cache; nothing is downloaded when ``HF_HUB_OFFLINE=1``).
    """
    if isinstance(source, Mapping):
        data = dict(source)
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(str(source), "config.json"))
            except Exception as e:  # noqa: BLE001 - any hub/cache failure means "not available here"
                raise CheckpointError(
                    f"cannot read the MuQ config {str(source)!r} ({type(e).__name__}); pass --muq-config with the "
                    f"config.json of {DEFAULT_MUQ} (e.g. from a Hugging Face cache where the original code ran)"
                ) from None
        data = json.loads(path.read_text())
    if isinstance(data.get("config"), Mapping):  # PyTorchModelHubMixin may nest the init kwargs
        data = dict(data["config"])
    from muq.muq.muq import MuQConfig

    known = {f.name for f in dataclasses.fields(MuQConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"MuQ config: unknown key {unknown[0]!r}")
    return json.loads(json.dumps(dataclasses.asdict(MuQConfig(**data))))


# ------------------------------------------------------------------------------------------------ import
def _match(expected: Mapping[str, Tensor], got: Mapping[str, Tensor], where: str, name) -> None:
    """Raise naming the first missing / unexpected / mis-shaped key (``name`` gives the source spelling)."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{where}: missing key {name(missing[0])!r}{more}")
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{where}: unexpected key {name(unexpected[0])!r}{more}")
    for key in expected:
        if tuple(expected[key].shape) != tuple(got[key].shape):
            raise CheckpointError(f"{where}: key {name(key)!r} has shape {list(got[key].shape)}, "
                                  f"expected {list(expected[key].shape)}")


def _plain(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().clone()


@dataclass
class Converted:
    """Result of :func:`convert_original`: our config (plain dict), the weights and the report."""

    config: dict[str, Any]
    generator: dict[str, Tensor]
    teacher: dict[str, Tensor]
    discriminator: dict[str, Tensor] | None
    report: ConversionReport


def convert_original(ckpt: Mapping[str, Any], muq_config: Mapping[str, Any], with_discriminator: bool = False,
                     name: str = "muq_xcodec_imported") -> Converted:
    """Map an original muq-xcodec checkpoint dict onto our model, checking every key and shape.

    Args:
        ckpt: output of :func:`load_checkpoint`.
        muq_config: MuQ architecture (:func:`read_muq_config`) of the ``semantic.`` weights.
        with_discriminator: also map ``discriminator.`` (else its tensors are dropped).
        name: ``name`` of the resulting codec config.

    Raises:
        CheckpointError: a missing, unexpected or mis-shaped key (named), or an inconsistent geometry.
    """
    from codec.builders import build_discriminator, build_generator
    from codec.config import ConfigError, load_codec_config

    state, rest = split_checkpoint(ckpt)
    report = ConversionReport()
    for entry, paths in rest.items():
        if paths:
            report.dropped[f"training state: {entry}"] = paths

    groups: dict[str, dict[str, Tensor]] = {"generator": {}, "alias": {}, "teacher": {}, "discriminator": {}}
    for key, value in state.items():
        if key.split(".", 1)[0] in GENERATOR_ROOTS:
            groups["generator"][key] = value
        elif key.startswith(tuple(ALIASES)):
            groups["alias"][key] = value
        elif key.startswith(TEACHER_PREFIX):
            groups["teacher"][key[len(TEACHER_PREFIX):]] = value
        elif key.startswith(DISCRIMINATOR_PREFIX):
            groups["discriminator"][key[len(DISCRIMINATOR_PREFIX):]] = value
        else:
            raise CheckpointError(f"state_dict: unexpected key {key!r} (not encoder/decoder/quantizer/fc_prior/"
                                  "fc_post1/fc_post2/generator/semantic/discriminator)")

    geometry = infer_geometry(groups["generator"])
    muq_config = dict(muq_config)
    w2v2 = muq_config.get("w2v2_config") or {}
    if geometry["semantic_dim"] != muq_config["encoder_dim"]:
        raise CheckpointError(f"fc_post1.weight predicts {geometry['semantic_dim']}-dim features but the MuQ config "
                              f"has encoder_dim {muq_config['encoder_dim']}")
    semantic_dim = geometry.pop("semantic_dim")
    overrides: dict[str, Any] = {
        "name": name,
        "model": {**geometry, **ORIGINAL_ARCHITECTURE},
        "teacher": {"source": "imported", "model_id": "", "layer": -1, "dim": semantic_dim,
                    "depth": int(muq_config["encoder_depth"]),
                    "heads": int(w2v2.get("num_attention_heads", 16)), "conv_dim": int(muq_config["conv_dim"]),
                    "muq_config": muq_config},
        "inference": dict(ORIGINAL_INFERENCE),
    }
    if with_discriminator:
        if not groups["discriminator"]:
            raise CheckpointError("--with-discriminator: the checkpoint has no discriminator.* weights")
        overrides["discriminator"] = infer_discriminator(groups["discriminator"])
    try:
        cfg = load_codec_config("muq_xcodec", overrides)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint geometry is not supported here: {e}") from None

    # Generator: rename, then the key set and every shape must equal a freshly built XCodec's.
    ours = {original_to_ours(k): v for k, v in groups["generator"].items()}
    if len(ours) != len(groups["generator"]):
        raise CheckpointError("state_dict holds the same weight under both weight-norm spellings")
    _match(build_generator(cfg).state_dict(), ours, "generator", ours_to_original)
    report.mapped["generator"] = sorted(groups["generator"])

    # generator.N.* are the same modules registered twice in the original; they must equal their twins.
    for key, value in groups["alias"].items():
        prefix = next(p for p in ALIASES if key.startswith(p))
        twin = ALIASES[prefix] + key[len(prefix):]
        if twin not in groups["generator"]:
            raise CheckpointError(f"state_dict: unexpected key {key!r} (no {twin!r} beside it)")
        if value.shape != groups["generator"][twin].shape or not torch.equal(value, groups["generator"][twin]):
            raise CheckpointError(f"state_dict: {key!r} differs from {twin!r} (expected the same module twice)")
    if groups["alias"]:
        report.dropped["duplicate of encoder/quantizer/decoder (generator.N alias)"] = sorted(groups["alias"])

    # Teacher: the checkpoint's own MuQ, complete, against the given architecture.
    teacher = {to_new_weight_norm(k): v for k, v in groups["teacher"].items()}
    _match(build_muq(muq_config).state_dict(), teacher, "semantic (MuQ)", lambda k: TEACHER_PREFIX + to_old_weight_norm(k))
    report.mapped["teacher"] = sorted(TEACHER_PREFIX + k for k in groups["teacher"])

    discriminator = None
    if groups["discriminator"]:
        source_keys = sorted(DISCRIMINATOR_PREFIX + k for k in groups["discriminator"])
        if with_discriminator:
            discriminator = {discriminator_original_to_ours(k): v for k, v in groups["discriminator"].items()}
            _match(build_discriminator(cfg).state_dict(), discriminator, "discriminator",
                   lambda k: DISCRIMINATOR_PREFIX + discriminator_ours_to_original(k))
            report.mapped["discriminator"] = source_keys
            report.notes.append("discriminator weights map 1:1, but our forward frames inputs slightly differently "
                                "(period padding when the length divides the period; torch.stft framing instead of "
                                "audiotools' match_stride): a warm start for fine-tuning, not bit-identical logits")
        else:
            report.dropped["discriminator (use --with-discriminator to keep it)"] = source_keys

    report.notes.append("geometry: " + ", ".join(f"{k}={v}" for k, v in geometry.items()) +
                        f", semantic_dim={semantic_dim}")
    report.notes.append("inference.mode=reference (non-overlapping 10 s chunks, no context, first channel) "
                        "reproduces the original inference.py; set inference.mode=default for our windowing")
    return Converted(config=_to_plain(cfg), generator={k: _plain(v) for k, v in ours.items()},
                     teacher={k: _plain(v) for k, v in teacher.items()},
                     discriminator=None if discriminator is None else {k: _plain(v) for k, v in discriminator.items()},
                     report=report)


def _to_plain(cfg: Any) -> dict[str, Any]:
    from codec.config import config_to_dict

    return config_to_dict(cfg)


def import_muq_xcodec(checkpoint: str | Path, out_dir: str | Path, muq_config: str | Path | Mapping = DEFAULT_MUQ,
                      with_discriminator: bool = False, trust_checkpoint: bool = False,
                      name: str = "muq_xcodec_imported") -> ConversionReport:
    """Convert an original muq-xcodec Lightning checkpoint into a checkpoint directory of ours.

    Writes ``model.safetensors``, ``teacher.safetensors``, ``config.yaml`` (``teacher.source: imported``,
    ``inference.mode: reference``) and, with ``with_discriminator``, ``discriminator.safetensors``.
    ``Codec.from_pretrained(out_dir)`` loads the result.

    Args:
        checkpoint: the original ``.ckpt``.
        out_dir: checkpoint directory to write.
        muq_config: MuQ architecture of the ``semantic.`` weights (see :func:`read_muq_config`).
        with_discriminator: keep the discriminator weights too.
        trust_checkpoint: allow a full (UNSAFE, code-executing) unpickle if the file needs one.
        name: config ``name``.

    Returns:
        The report (also describes dropped tensors).
    """
    from codec.checkpoint import MODEL_FILE, TEACHER_FILE, write_config
    from codec.config import config_to_yaml, load_codec_config

    converted = convert_original(load_checkpoint(checkpoint, trust=trust_checkpoint),
                                 read_muq_config(muq_config), with_discriminator, name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(converted.generator, str(out / MODEL_FILE))
    save_file(converted.teacher, str(out / TEACHER_FILE))
    if converted.discriminator is not None:
        save_file(converted.discriminator, str(out / DISCRIMINATOR_FILE))
    write_config(out, config_to_yaml(load_codec_config(converted.config)))
    return converted.report


# ------------------------------------------------------------------------------------------------ export
def export_state_dict(directory: str | Path, with_discriminator: bool = False) -> dict[str, Tensor]:
    """Our checkpoint directory -> an original-layout ``state_dict`` (old weight-norm spelling).

    The teacher comes from ``teacher.safetensors`` (imported / random teachers) or, for a published teacher,
    from the model itself (Hugging Face cache).

    Raises:
        CheckpointError: no discriminator weights but ``with_discriminator``.
    """
    from codec.checkpoint import CONFIG_FILE, MODEL_FILE, TEACHER_FILE
    from codec.config import load_codec_config

    directory = Path(directory)
    cfg = load_codec_config(directory / CONFIG_FILE)
    state: dict[str, Tensor] = {}
    for key, value in load_file(str(directory / MODEL_FILE)).items():
        state[ours_to_original(key)] = value
    for alias, root in ALIASES.items():  # the original's nn.ModuleList registers these a second time
        state.update({alias + k[len(root):]: v for k, v in list(state.items()) if k.startswith(root)})
    if (directory / TEACHER_FILE).is_file():
        teacher = load_file(str(directory / TEACHER_FILE))
    else:
        from codec.builders import build_teacher

        teacher = {k: _plain(v) for k, v in build_teacher(cfg).muq.state_dict().items()}
    state.update({TEACHER_PREFIX + to_old_weight_norm(k): v for k, v in teacher.items()})
    if with_discriminator:
        if not (directory / DISCRIMINATOR_FILE).is_file():
            raise CheckpointError(f"{directory}: no {DISCRIMINATOR_FILE} to export")
        for key, value in load_file(str(directory / DISCRIMINATOR_FILE)).items():
            state[DISCRIMINATOR_PREFIX + discriminator_ours_to_original(key)] = value
    return state


def original_hparams(cfg: Any) -> dict[str, Any]:
    """The original ``CODEC.__init__`` arguments for our config's geometry (Lightning passes a checkpoint's
    ``hyper_parameters`` to ``__init__`` in ``load_from_checkpoint``). ``quantizer_dropout`` is typed ``bool``
    there but used as DAC's dropout probability, so the float is kept."""
    m = cfg.model
    return {"encoder_dim": int(m.encoder_dim), "encoder_rates": [int(r) for r in m.encoder_rates],
            "latent_dim": None if m.latent_dim is None else int(m.latent_dim), "decoder_dim": int(m.decoder_dim),
            "decoder_rates": [int(r) for r in m.decoder_rates], "n_codebooks": int(m.n_codebooks),
            "codebook_size": int(m.codebook_size), "codebook_dim": int(m.codebook_dim),
            "quantizer_dropout": float(m.quantizer_dropout), "sample_rate": int(m.sample_rate)}


def fresh_discriminator_state(cfg: Any) -> dict[str, Tensor]:
    """Freshly initialised (untrained) weights of the original's ``Discriminator()`` (DAC defaults: periods
    2, 3, 5, 7, 11, multi-band STFT at 2048, 1024, 512, 32 channels) in the original layout, seeded by
    ``cfg.seed + 1`` like a new training run's discriminator."""
    from codec.builders import build_discriminator
    from codec.config import DiscriminatorConfig, load_codec_config

    original = dataclasses.asdict(DiscriminatorConfig(periods=list(ORIGINAL_PERIODS),
                                                      fft_sizes=list(ORIGINAL_FFT_SIZES)))
    cfg = load_codec_config(cfg, {"discriminator": original})
    return {DISCRIMINATOR_PREFIX + discriminator_ours_to_original(k): _plain(v)
            for k, v in build_discriminator(cfg).state_dict().items()}


def export_muq_xcodec(directory: str | Path, output: str | Path, with_discriminator: bool = False,
                      fresh_discriminator: bool = True) -> Path:
    """Write our checkpoint directory as an original-layout Lightning checkpoint. Returns the path.

    The file loads with the original code's ``CODEC.load_from_checkpoint(path)`` (strict): it holds
    ``state_dict``, ``epoch``, ``global_step``, ``pytorch-lightning_version`` (:data:`LIGHTNING_VERSION`,
    the original's) and ``hyper_parameters`` (the ``CODEC.__init__`` geometry, :func:`original_hparams`),
    plus a ``muq_xcodec_export`` entry saying where the weights came from and whether the discriminator is
    trained. Tensors and plain containers only (``torch.load(weights_only=True)`` reads it). It is a weights
    checkpoint, not a training-resume one (no optimizer or loop state).

    Args:
        directory: our checkpoint directory.
        output: ``.ckpt`` to write.
        with_discriminator: export ``discriminator.safetensors`` (trained weights).
        fresh_discriminator: without ``with_discriminator``, write freshly initialised discriminator weights
            (the original module always has one; recorded as ``discriminator: fresh`` in
            ``muq_xcodec_export``). False omits them: then load with ``strict=False``.

    The original code builds ``fc_prior`` as ``Linear(2 * latent, 2 * latent)``, so it can only load models
    whose teacher dim equals the latent dim (the full muq_xcodec geometry).
    """
    from codec.checkpoint import CONFIG_FILE
    from codec.config import load_codec_config

    cfg = load_codec_config(Path(directory) / CONFIG_FILE)
    state = export_state_dict(directory, with_discriminator)
    if with_discriminator:
        discriminator = "trained: from discriminator.safetensors"
    elif fresh_discriminator:
        state.update(fresh_discriminator_state(cfg))
        discriminator = f"fresh: untrained, randomly initialised (seed {int(cfg.seed) + 1}); not for GAN fine-tuning"
    else:
        discriminator = "absent: load with strict=False"
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "epoch": 0, "global_step": 0, "pytorch-lightning_version": LIGHTNING_VERSION,
                "hyper_parameters": original_hparams(cfg),
                "muq_xcodec_export": {"source": str(Path(directory).resolve()), "codec": str(cfg.name),
                                      "discriminator": discriminator}}, output)
    return output

"""Command line: ``python -m codec <command> ...`` (also part of the ``muq-xcodec`` script, ``jobs/__main__.py``).

Each command is a plain function; its signature becomes the arguments (parameters without a default are
positional, the others ``--options``) and its Google-style docstring becomes ``--help``. Add a command by
adding an entry to :data:`COMMANDS`: either a function or a lazy ``"module:function"`` string, so that
heavy modules are only imported when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any


def encode(input: Path, output: Path, n_q: int | None = None, bitrate: float | None = None,
           model: str = "tiny", device: str = "cpu", compile: bool = False) -> None:
    """Encode an audio file into a code file (.npz).

    Args:
        input: audio file (wav, flac, ogg, mp3, ...) at any sample rate; channels are averaged to mono.
        output: code file to write (.npz with codes int16 [n_q, T] and metadata).
        n_q: number of RVQ layers to keep (default: all).
        bitrate: alternative to --n-q, in bits per second (250 per layer).
        model: preset (tiny/debug), checkpoint directory, or MLflow URI (models:/NAME@ALIAS, runs:/...).
        device: torch device.
        compile: torch.compile the acoustic encoder (pays off on long files; one-off compile time).
    """
    from codec.allocator import tune_malloc
    from codec.preflight import check_encode_request

    tune_malloc()  # first, while this is the only thread: freed activations are reused, not re-faulted
    check_encode_request(input, model, n_q=n_q, bitrate=bitrate)  # before torch and the model load
    from codec.inference import Codec

    codec = Codec.from_pretrained(model, device=device)
    if compile:
        codec.configure(compile=True)
    written = codec.encode_file(input, n_q=n_q, bitrate=bitrate).save(output)
    print(f"wrote {written}")


def decode(input: Path, output: Path, model: str | None = None, sample_rate: int | None = None,
           device: str = "cpu") -> None:
    """Decode a code file (.npz) back to audio (mono, trimmed to the original duration).

    Args:
        input: code file written by `encode`.
        output: audio file to write (format from the suffix: .wav, .flac, .ogg, .aiff, .caf, .w64; MP3 is
            refused: its length is exact only for readers that honour its gapless header).
        model: codec to decode with (default: the model recorded in the code file).
        sample_rate: output sample rate (default: the original file's rate).
        device: torch device.
    """
    from codec.allocator import tune_malloc
    from codec.codefile import CodeFile
    from codec.preflight import check_decode_request

    tune_malloc()  # as in encode
    check_decode_request(input, output, sample_rate)  # before torch and the model load
    code_file = CodeFile.load(input)
    from codec.inference import Codec

    codec = Codec.from_pretrained(model or code_file.model, device=device)
    written = codec.decode_to_file(code_file, output, sample_rate=sample_rate)
    print(f"wrote {written}")


def import_muq_xcodec(checkpoint: Path, out_dir: Path, with_discriminator: bool = False,
                      muq_config: str = "OpenMuQ/MuQ-large-msd-iter", trust_checkpoint: bool = False,
                      name: str = "muq_xcodec_imported") -> None:
    """Import a released muq-xcodec Lightning checkpoint (github.com/dzq84/muq-xcodec) as a checkpoint dir.

    The result loads with `Codec.from_pretrained(OUT_DIR)` / `--model OUT_DIR`, keeps the checkpoint's own MuQ
    weights (teacher.safetensors) and defaults to `inference.mode: reference` (the original's chunking).

    Args:
        checkpoint: the original .ckpt (read with torch.load(weights_only=True): tensors only).
        out_dir: checkpoint directory to write (model.safetensors, teacher.safetensors, config.yaml).
        with_discriminator: also convert the discriminator (discriminator.safetensors) for fine-tuning.
        muq_config: MuQ architecture of the checkpoint's teacher: a config.json, a directory holding one, or
            a Hugging Face id found in the local cache.
        trust_checkpoint: UNSAFE: allow a full unpickle (runs code from the file) if it holds more than tensors.
        name: model name recorded in the config.
    """
    from codec.convert import import_muq_xcodec as run

    report = run(checkpoint, out_dir, muq_config=muq_config, with_discriminator=with_discriminator,
                 trust_checkpoint=trust_checkpoint, name=name)
    print(report.summary())
    print(f"wrote {out_dir}")


def export_muq_xcodec(model: Path, output: Path, with_discriminator: bool = False,
                      fresh_discriminator: bool = True) -> None:
    """Export a checkpoint directory as an original muq-xcodec Lightning checkpoint.

    The .ckpt loads with the original code's `CODEC.load_from_checkpoint(OUTPUT)` (strict): it carries
    pytorch-lightning_version and the CODEC geometry as hyper_parameters. Tensors and plain containers only.

    Args:
        model: checkpoint directory (save_pretrained / import-muq-xcodec layout).
        output: .ckpt file to write.
        with_discriminator: export the trained discriminator.safetensors.
        fresh_discriminator: without --with-discriminator, write untrained discriminator weights (the original
            module always has one; the file's muq_xcodec_export entry says so). --no-fresh-discriminator
            leaves them out (then load with strict=False).
    """
    from codec.convert import export_muq_xcodec as run

    print(f"wrote {run(model, output, with_discriminator=with_discriminator, fresh_discriminator=fresh_discriminator)}")


def models(local_dirs: str | None = None, tracking_uri: str | None = None) -> None:
    """List the available codecs (presets, local checkpoint folders, MLflow registry) and the bitrate table.

    Args:
        local_dirs: folders holding checkpoint directories, separated by the OS path separator
            (default: $MUQ_XCODEC_MODEL_DIRS).
        tracking_uri: MLflow tracking/registry URI to list registered models from (default: $MLFLOW_TRACKING_URI).
    """
    import os

    from codec.catalog import format_table, list_models

    dirs = None if local_dirs is None else [d for d in local_dirs.split(os.pathsep) if d]
    print(format_table(list_models(dirs, tracking_uri)))


# Subcommand -> function or "module:function" (imported on use).
COMMANDS: dict[str, Callable[..., Any] | str] = {
    "encode": encode,
    "decode": decode,
    "models": models,
    "import-muq-xcodec": import_muq_xcodec,
    "export-muq-xcodec": export_muq_xcodec,
    "push": "codec.publish:push",
}

# Errors that are the user's input, reported as one line on stderr (exit code 1) instead of a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError, TypeError, RuntimeError, OSError)


def _resolve(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name or "main")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {param: help}) from a Google-style docstring."""
    doc = inspect.cleandoc(doc or "")
    description, _, rest = doc.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in rest.splitlines():
        if line and not line[0].isspace():  # next section (Returns:, Raises:, ...)
            break
        match = re.match(r"^\s{2,8}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
        if match and (current is None or len(line) - len(line.lstrip()) <= 4):
            current = match.group(1)
            helps[current] = match.group(2)
        elif current and line.strip():
            helps[current] += " " + line.strip()
    return description.strip(), helps


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    return tp, False


def add_function_parser(subparsers: Any, name: str, fn: Callable[..., Any]) -> argparse.ArgumentParser:
    """Add a subcommand whose arguments and help come from ``fn``'s signature and docstring."""
    description, helps = _parse_docstring(fn.__doc__ or "")
    parser = subparsers.add_parser(name, help=description.splitlines()[0] if description else None,
                                   description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(fn)
    for param in inspect.signature(fn).parameters.values():
        tp, optional = _unwrap_optional(hints.get(param.name, str))
        help_text = helps.get(param.name, "")
        if param.default is inspect.Parameter.empty:
            parser.add_argument(param.name, type=tp, help=help_text)
        elif tp is bool:
            parser.add_argument(f"--{param.name.replace('_', '-')}", dest=param.name,
                                action=argparse.BooleanOptionalAction, default=param.default, help=help_text)
        else:
            default = "" if optional and param.default is None else f" (default: {param.default})"
            parser.add_argument(f"--{param.name.replace('_', '-')}", dest=param.name, type=tp,
                                default=param.default, help=help_text + default, metavar=param.name.upper())
    parser.set_defaults(_fn=fn)
    return parser


def build_parser(commands: dict[str, Callable[..., Any] | str] | None = None,
                 selected: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser with one subcommand per entry of ``commands`` (default :data:`COMMANDS`).

    Lazy ``"module:function"`` commands are only imported when ``selected`` names them.
    """
    parser = argparse.ArgumentParser(prog="python -m codec", description="muq-xcodec semantic music codec.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, target in (commands or COMMANDS).items():
        if callable(target) or name == selected:
            add_function_parser(subparsers, name, _resolve(target))
        else:
            subparsers.add_parser(name, help=f"see `{name} --help` ({target})")
    return parser


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse ``argv`` (with ``parser``, default :func:`build_parser`) and run the chosen command. Returns the
    process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    args = vars((parser or build_parser(selected=selected)).parse_args(argv))
    fn = args.pop("_fn")
    args.pop("command")
    try:
        fn(**args)
    except USER_ERRORS as e:
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON / YAML.

A nested state (optimizer / scheduler ``state_dict``s, RNG states, counters) is split by :func:`save_tree`
into ``<name>.safetensors`` holding every tensor under its path (``"optimizer_g/state/3/exp_avg"``) and
``<name>.json`` holding the structure with ``{"__tensor__": path}`` placeholders. Non-string dict keys
(optimizer states are keyed by parameter index) and tuples round-trip exactly.

A training checkpoint folder (one per ``ray.train.report``; Ray merges the workers' folders):

=========================== =======================================================
``generator.safetensors``   generator weights (unwrapped from DDP)
``discriminator.safetensors`` discriminator weights
``train_state.{safetensors,json}`` optimizers, schedulers, step (``GANTrainStep.state_dict``)
``meta.json``               step, MLflow run id, attempt
``config.yaml``             the resolved training config
``rng_rank<r>.{safetensors,json}`` RNG states of worker r (every worker writes its own)
=========================== =======================================================
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_ITEMS = "__items__"
_TUPLE = "__tuple__"
_NDARRAY = "__ndarray__"


def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(obj, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(obj))
        return {_NDARRAY: path}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{path}/{k}", tensors) for k, v in obj.items()}
        return {_ITEMS: [[k, _encode(v, f"{path}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {_TUPLE: [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{path}: cannot store {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _NDARRAY in obj:
            return tensors[obj[_NDARRAY]].numpy()
        if _ITEMS in obj:
            return {k: _decode(v, tensors) for k, v in obj[_ITEMS]}
        if _TUPLE in obj:
            return tuple(_decode(v, tensors) for v in obj[_TUPLE])
        return {k: _decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    return obj


def save_tree(state: Any, directory: str | Path, name: str) -> None:
    """Write ``state`` as ``<name>.safetensors`` (tensors) + ``<name>.json`` (the rest)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, "", tensors)
    save_file(tensors, str(directory / f"{name}.safetensors"))
    (directory / f"{name}.json").write_text(json.dumps(skeleton))


def load_tree(directory: str | Path, name: str) -> Any:
    """Read what :func:`save_tree` wrote."""
    directory = Path(directory)
    tensors = load_file(str(directory / f"{name}.safetensors"))
    return _decode(json.loads((directory / f"{name}.json").read_text()), tensors)


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states of this process."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"name": np_state[0], "keys": np_state[1], "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"], n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Module weights to safetensors (shared tensors cloned so safetensors accepts them)."""
    state = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))


def load_weights(module: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights into ``module`` (strict)."""
    module.load_state_dict(load_file(str(path)))

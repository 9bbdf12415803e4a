"""Int8 checkpoint folders: write them, and load a checkpoint quantized or as stored.

A quantized folder keeps every file of its source except the weights: ``model.safetensors``
holds inferd's own module state (int8 ``weight`` and fp32 ``scale`` of each layer, after the
fusion of q/k/v and gate/up), and ``config.json`` gains ``quantization_config`` with
``quant_method = "inferd"``. Only inferd reads it (transformers refuses the unknown method).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Final

import torch
from safetensors.torch import save_file
from torch import nn

from inferd.errors import ConfigError
from inferd.llm.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
    ModelArchConfig,
    load_arch_config,
    load_weights,
)
from inferd.llm.models import MODELS, load_model, resolve_dtype
from inferd.llm.quant.layers import (
    QUANTIZATIONS,
    Int8Linear,
    embedding_name,
    format_bytes,
    quantize_model,
    set_activations,
    weight_bytes,
)

logger = logging.getLogger("inferd.llm")

QUANT_METHOD: Final = "inferd"


def load_checkpoint(
    path: str | Path,
    dtype: torch.dtype | str | None,
    device: torch.device | str,
    quantization: str = "none",
) -> tuple[nn.Module, ModelArchConfig]:
    """Load a checkpoint, quantized as ``quantization`` asks; an int8 checkpoint stays int8."""
    if quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"quantization = {quantization!r}: expected one of {', '.join(QUANTIZATIONS)}"
        )
    arch = load_arch_config(path)
    if arch.quantization is not None:
        model = _load_int8(path, arch, dtype, device)
        set_activations(model, "w8a8" if quantization == "w8a8" else "int8")
        return model, arch
    model, arch = load_model(path, dtype, device)
    if quantization != "none":
        before, started = weight_bytes(model), time.perf_counter()
        quantize_model(model, quantization)
        after = weight_bytes(model)
        logger.info(
            "%s: weights quantized to int8 (%s) in %.1f s: %s -> %s (%.1f%%); "
            "`inferd optimize` measures its speed and accuracy",
            path,
            quantization,
            time.perf_counter() - started,
            format_bytes(before),
            format_bytes(after),
            100 * after / before,
        )
    return model, arch


def _load_int8(
    path: str | Path, arch: ModelArchConfig, dtype: torch.dtype | str | None, device: Any
) -> nn.Module:
    target = resolve_dtype(dtype if dtype is not None else arch.torch_dtype, path)
    state = {name: _placed(t, target, device) for name, t in load_weights(path).items()}
    with torch.device("meta"):
        model = MODELS[arch.architecture].model_class(arch)
        embedding = embedding_name(model)
        quantize_model(model, lm_head=f"{embedding}.scale" in state)
    if arch.tie_word_embeddings and f"{embedding}.scale" in state:
        # Saved once: the tied head takes the embedding's very tensors.
        state["lm_head.weight"] = state[f"{embedding}.weight"]
        state["lm_head.scale"] = state[f"{embedding}.scale"]
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ConfigError(f"{path}: int8 weights do not match {arch.architecture}: {exc}") from exc
    logger.info(
        "%s: int8 checkpoint loaded, %s of weights", path, format_bytes(weight_bytes(model))
    )
    return model.requires_grad_(False).eval()


def _placed(tensor: torch.Tensor, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """On ``device``, floating tensors (scales too) in ``dtype``, int8 ones kept, aligned.

    Placed before the model takes them, not with ``model.to``, so that a tied head and
    embedding keep sharing one tensor. safetensors hands out views at the file's offsets,
    and the packed int8 kernel crashes on misaligned weights: those are copied.
    """
    placed = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    return placed if placed.data_ptr() % 64 == 0 else placed.clone()


def save_quantized(model: nn.Module, arch: ModelArchConfig, source: Path, out: Path) -> None:
    """Write ``model`` (quantized from checkpoint ``source``) as checkpoint folder ``out``."""
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if arch.tie_word_embeddings:  # the head is the embedding: safetensors stores it once
        state = {name: t for name, t in state.items() if not name.startswith("lm_head.")}
    config = _read_config(source)
    config["quantization_config"] = {
        "quant_method": QUANT_METHOD,
        "weights": "int8",
        "scheme": "symmetric, one scale per output channel",
        "lm_head": isinstance(getattr(model, "lm_head", None), Int8Linear),
    }
    _write_folder(source, out, state, config)


def save_cast(source: Path, out: Path, dtype_name: str) -> None:
    """Write ``source`` with every floating weight cast to ``dtype_name`` (Hugging Face names)."""
    dtype = resolve_dtype(dtype_name)
    weights = load_weights(source)
    state = {n: t.to(dtype) if t.is_floating_point() else t for n, t in weights.items()}
    config = _read_config(source)
    config["torch_dtype"] = dtype_name
    config.pop("dtype", None)
    _write_folder(source, out, state, config)


def _write_folder(
    source: Path, out: Path, state: dict[str, torch.Tensor], config: dict[str, Any]
) -> None:
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out}: the converted copy cannot replace its source")
    out.mkdir(parents=True, exist_ok=True)
    skipped = {CONFIG_FILE, WEIGHTS_INDEX_FILE}
    for file in source.iterdir():
        if file.is_file() and file.name not in skipped and file.suffix != ".safetensors":
            shutil.copy2(file, out / file.name)
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})
    (out / WEIGHTS_FILE).chmod(0o644)  # safetensors writes it private; it is plain data
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _read_config(folder: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    return config

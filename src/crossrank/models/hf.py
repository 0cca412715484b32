"""Loading Hugging Face sequence classifiers, pruned attention heads included, on any transformers version.

Hugging Face records removed attention heads in ``config.pruned_heads``. transformers 4 applied
them while loading; transformers 5 no longer does, and a folder with pruned heads then fails to
load with a size mismatch. crossrank removes the heads itself (:func:`prune_heads`) and loads such
folders through :func:`load_classifier`, so a pruned model (the built-in ``fast`` one, or any
``prune:`` distillation student) trains, exports and scores the same way on both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from crossrank._deps import require
from crossrank.errors import ModelError

__all__ = ["load_classifier", "prune_heads"]


def _layers(model: Any) -> Any:
    base = getattr(model, model.base_model_prefix, None)
    stack = getattr(getattr(base, "encoder", None), "layer", None)
    if stack is None or not hasattr(stack[0], "attention"):
        raise ModelError(f"{type(model).__name__} is not a BERT-like encoder (no encoder.layer[i].attention)")
    return stack


def prune_heads(model: Any, removed: Mapping[Any, Iterable[int]]) -> None:
    """Remove attention heads in place: ``{layer: [head, ...]}``, head numbers of the unpruned layer.

    The query, key and value projections lose the heads' rows, the attention output projection
    their columns; ``model.config.pruned_heads`` records what was removed, as Hugging Face does.

    Raises:
        ModelError: the model is not BERT-like, or a head number is out of range.
    """
    torch = require("torch", feature="pruned models")
    stack = _layers(model)
    before = getattr(model.config, "pruned_heads", None) or {}
    record: dict[str, list[int]] = {str(k): sorted(v) for k, v in before.items()}
    for key, heads in removed.items():
        layer = int(key)
        drop = sorted(set(int(h) for h in heads))
        if not drop:
            continue
        attn = stack[layer].attention
        sa = attn.self
        n, size = int(sa.num_attention_heads), int(sa.attention_head_size)
        if drop[0] < 0 or drop[-1] >= n or len(drop) >= n:
            raise ModelError(f"layer {layer} has {n} heads; cannot remove {drop}")
        keep = [h for h in range(n) if h not in drop]
        idx = torch.cat([torch.arange(h * size, (h + 1) * size) for h in keep])
        for name in ("query", "key", "value"):
            old = getattr(sa, name)
            new = torch.nn.Linear(old.in_features, idx.numel(), bias=old.bias is not None)
            with torch.no_grad():
                new.weight.copy_(old.weight[idx])
                if old.bias is not None:
                    new.bias.copy_(old.bias[idx])
            setattr(sa, name, new)
        old = attn.output.dense
        new = torch.nn.Linear(idx.numel(), old.out_features, bias=old.bias is not None)
        with torch.no_grad():
            new.weight.copy_(old.weight[:, idx])
            if old.bias is not None:
                new.bias.copy_(old.bias)
        attn.output.dense = new
        sa.num_attention_heads = len(keep)
        sa.all_head_size = len(keep) * size
        record[str(layer)] = sorted(set(record.get(str(layer), [])) | set(drop))
    model.config.pruned_heads = record


def load_classifier(folder: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Return ``AutoModelForSequenceClassification.from_pretrained(folder, **kwargs)``, pruned heads restored.

    Raises:
        ModelError: the folder's weights do not fit its config.
    """
    torch = require("torch", feature="Hugging Face models")
    transformers = require("transformers", feature="Hugging Face models")
    path = Path(folder)
    num_labels = kwargs.pop("num_labels", None)
    labels = {"num_labels": num_labels} if num_labels else {}
    config = transformers.AutoConfig.from_pretrained(str(path), **labels)
    pruned = {str(k): list(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items() if v}
    if not pruned:
        return transformers.AutoModelForSequenceClassification.from_pretrained(str(path), **labels, **kwargs)
    config.pruned_heads = {}
    extra = {k: kwargs[k] for k in ("attn_implementation",) if k in kwargs}
    model = transformers.AutoModelForSequenceClassification.from_config(config, **extra)
    prune_heads(model, pruned)
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(str(path / "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise ModelError(f"{path} has no model.safetensors or pytorch_model.bin")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ModelError(f"the weights in {path} do not fit its config ({err})") from err
    params = {n for n, _ in model.named_parameters()}
    missing = sorted(params & set(result.missing_keys))
    if missing:
        raise ModelError(f"{path} lacks weights for {missing[:3]} ... ({len(missing)} in all)")
    return model.to(kwargs.get("dtype", torch.float32)).eval()

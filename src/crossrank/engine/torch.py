"""The torch backend: transformers in fp32, for folders with Hugging Face weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.engine.base import Task, default_threads
from crossrank.errors import ModelError
from crossrank.models.source import ModelFiles
from crossrank.models.tokenizer import uses_token_types

__all__ = ["TorchBackend"]


class TorchBackend:
    """Run a Hugging Face model in fp32 with torch.

    Args:
        folder: a Hugging Face model folder.
        config: its config (decides whether segment ids are fed).
        threads: torch intra-op threads; defaults to the cores this process may use.
        task: ``"sequence-classification"`` loads ``AutoModelForSequenceClassification`` and returns
            its logits ``(batch, num_labels)``; ``"feature-extraction"`` loads ``AutoModel`` and
            returns its last hidden states ``(batch, length, hidden_size)``.
    """

    def __init__(
        self,
        folder: Path,
        config: Mapping[str, Any],
        *,
        threads: int | None = None,
        task: Task = "sequence-classification",
    ) -> None:
        torch = require("torch", feature="backend 'torch'")
        transformers = require("transformers", feature="backend 'torch'")
        torch.set_num_threads(threads or default_threads())
        broken: tuple[type[Exception], ...] = (OSError, ValueError, KeyError)
        try:  # a weights file cut short fails in safetensors, with an error type of its own
            from safetensors import SafetensorError

            broken += (SafetensorError,)
        except ImportError:
            pass
        try:
            if task == "sequence-classification":
                from crossrank.models.hf import load_classifier

                model = load_classifier(folder, dtype=torch.float32)
            else:
                model = transformers.AutoModel.from_pretrained(str(folder), dtype=torch.float32)
        except broken as err:
            raise ModelError(f"transformers cannot load {folder} ({err})") from err
        self.model = model.eval()
        self.model_file = folder
        self.task = task
        self.parallelism = 1
        if task == "sequence-classification":
            self.num_labels = int(model.config.num_labels)
        else:
            self.num_labels = int(model.config.hidden_size)
        self._types = uses_token_types(config)
        self._torch = torch

    @classmethod
    def load(cls, files: ModelFiles, *, task: Task, threads: int | None = None, **options: Any) -> TorchBackend:
        """Return the backend for the Hugging Face weights in ``files.folder``; ``options`` are ignored."""
        if not files.has_weights:
            raise ModelError(f"model {files.name!r} has no Hugging Face weights in {files.folder}")
        return cls(files.folder, files.config, threads=threads, task=task)

    def run(self, inputs: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.float32]:
        """Return the logits ``(batch, num_labels)`` or the last hidden states, float32."""
        torch = self._torch
        ids = inputs["input_ids"]
        kwargs = {"input_ids": torch.from_numpy(ids)}
        if "attention_mask" in inputs:
            kwargs["attention_mask"] = torch.from_numpy(inputs["attention_mask"])
        if self._types and "token_type_ids" in inputs:
            kwargs["token_type_ids"] = torch.from_numpy(inputs["token_type_ids"])
        with torch.inference_mode():
            result = self.model(**kwargs)
        if self.task == "sequence-classification":
            logits: npt.NDArray[np.float32] = result.logits.float().numpy().reshape(ids.shape[0], -1)
            return logits
        hidden: npt.NDArray[np.float32] = result.last_hidden_state.float().numpy()
        return hidden

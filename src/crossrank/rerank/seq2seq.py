"""The T5 family: monoT5-style rerankers read at the first decoder step.

The input is the template's text (``Query: … Document: … Relevant:``, then ``</s>``); the decoder
runs one step from its start token, and the score is ``logit("true") - logit("false")`` there,
whose sigmoid is the reference's softmax of "true" against "false". Only the two rows of the LM
head the score reads are kept, and T5's output scaling (``d_model ** -0.5`` for tied
embeddings) is applied as transformers applies it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank._progress import counting
from crossrank.errors import ConfigError
from crossrank.ranking import ScoredPairs
from crossrank.rerank.decoder import (
    PromptScorer,
    batch_limits,
    batches_by_budget,
    load_prompt_model,
    placement_reason,
)
from crossrank.rerank.prompts import PromptEncoder

if TYPE_CHECKING:
    from crossrank.models.source import ModelFiles
    from crossrank.rerank.config import Activation, ScoringConfig

__all__ = ["T5Scorer"]


class T5Scorer(PromptScorer):
    """Score pairs with a T5 reranker, in torch (fp32).

    Args:
        model: the loaded ``T5ForConditionalGeneration``.
        encoder: the prompt encoder.
        config: scoring settings.
        name: the model's name, for messages.
    """

    def __init__(
        self,
        model: Any,
        encoder: PromptEncoder,
        *,
        config: ScoringConfig,
        name: str = "",
        instruction: str | None = None,
        progress: bool = False,
    ) -> None:
        import torch

        self.model = model
        self.encoder = None
        self.prompts = encoder
        self.template = encoder.template
        self.family = "t5"
        self.name = name
        self.max_length = encoder.max_length
        self.instruction = instruction
        self.progress = progress
        self.backend_name = "torch"
        self.backend_reason = "T5 rerankers run in torch"
        self.labels: tuple[str, ...] = ("score",)
        self.default_activation: Activation = "sigmoid"
        if encoder.negative_id is None:
            raise ConfigError(f"the t5 family reads two tokens; template {self.template.name!r} names one")
        rows = [encoder.positive_id, encoder.negative_id]
        self._head = model.get_output_embeddings().weight.detach()[rows].clone().float()
        self.device = self._head.device
        cfg = model.config
        self._scale = float(cfg.d_model) ** -0.5 if getattr(cfg, "tie_word_embeddings", True) else 1.0
        self._pad_id = int(getattr(cfg, "pad_token_id", 0) or 0)
        self._start = int(getattr(cfg, "decoder_start_token_id", self._pad_id) or 0)
        self._token_budget, self._max_batch_size = batch_limits(config, self.device)
        self._torch = torch

    @classmethod
    def from_files(
        cls,
        files: ModelFiles,
        *,
        backend: str,
        config: ScoringConfig,
        progress: bool = False,
        reason: str = "",
        template: str | Mapping[str, Any] | None = None,
        instruction: str | None = None,
        **_: Any,
    ) -> T5Scorer:
        """Load a T5 reranker's folder (Hugging Face weights) in torch (:func:`torch_placement`).

        Raises:
            ConfigError: ``backend`` is not torch or auto, the folder has no weights, or the
                vocabulary lacks the template's "true"/"false" tokens.
            ModelError: transformers cannot load the weights.
        """
        model, encoder = load_prompt_model(
            files,
            backend=backend,
            config=config,
            family="t5",
            auto="AutoModelForSeq2SeqLM",
            template=template,
            default_template="monot5",
            cap=512,
            bounded=False,
        )
        scorer = cls(model, encoder, config=config, name=files.name, instruction=instruction, progress=progress)
        scorer.backend_reason = placement_reason(model.device, model.dtype)
        return scorer

    def score(self, queries: Sequence[str], documents: Sequence[str], *, instruction: str | None = None) -> ScoredPairs:
        """Return raw scores, float32 ``(n, 1)``: ``logit(true) - logit(false)`` at the first decoder step."""
        torch = self._torch
        n = len(queries)
        out = np.zeros((n, 1), dtype=np.float32)
        if n == 0:
            return self._empty()
        enc = self.tokens(queries, documents, instruction=instruction)
        groups = batches_by_budget(enc.lengths, token_budget=self._token_budget, max_batch_size=self._max_batch_size)
        with torch.inference_mode(), counting(self.progress and n >= 64, "scoring", n, transient=True) as tick:
            for idx in groups:
                rows = [enc.ids[i] for i in idx]
                width = max(len(r) for r in rows)
                ids = np.full((len(rows), width), self._pad_id, dtype=np.int64)
                mask = np.zeros((len(rows), width), dtype=np.int64)
                for r, seq in enumerate(rows):
                    ids[r, : len(seq)] = seq
                    mask[r, : len(seq)] = 1
                attention = torch.from_numpy(mask).to(self.device)
                encoded = self.model.get_encoder()(
                    input_ids=torch.from_numpy(ids).to(self.device), attention_mask=attention
                )
                start = torch.full((len(rows), 1), self._start, dtype=torch.long, device=self.device)
                hidden = self.model.get_decoder()(
                    input_ids=start,
                    encoder_hidden_states=encoded.last_hidden_state,
                    encoder_attention_mask=attention,
                ).last_hidden_state[:, 0, :]
                logits = (hidden.float() * self._scale) @ self._head.T
                out[idx, 0] = (logits[:, 0] - logits[:, 1]).cpu().numpy()
                if tick is not None:
                    tick(len(idx))
        return ScoredPairs(out, enc.truncated, enc.lengths)

"""The decoder families: LLM rerankers read through token logits, or through a classification head.

- ``causal-lm``: a ``…ForCausalLM`` (Qwen3-Reranker, mxbai-rerank-v2, bge-reranker-v2-gemma) fed
  its prompt template; the score is ``logit(positive) - logit(negative)`` at the last position
  (or ``logit(positive)`` alone). Only the two rows of the LM head the score reads are kept
  (folded into a 2-row head), so the full-vocabulary projection is never computed: the result
  is the same number, exactly, as the reference's ``logits[:, -1, yes] - logits[:, -1, no]``.
- ``decoder-classification``: a ``…ForSequenceClassification`` decoder (Qwen3-Reranker's
  sequence-classification conversions), read at the last token.

Pairs are sorted by length, batched by a token budget, padded on the left (so the last position
is every row's last token) with position ids that count from each row's first real token.
Scores stay in fp32 up to the activation.

**Shared-prefix reuse.** The pairs of one query share their first tokens (the template's head,
the instruction and the query). Their key/value cache is computed once, and each batch runs
only its documents' tokens against it (padded on the right, read at each row's last token).
The scores are the same numbers as without reuse, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from crossrank._deps import require
from crossrank._progress import counting
from crossrank.cpu import cpu_flags
from crossrank.engine.base import default_threads
from crossrank.errors import ConfigError, ModelError
from crossrank.models.source import check_memory
from crossrank.models.tokenizer import model_max_length
from crossrank.ranking import ScoredPairs
from crossrank.rerank.prompts import PromptEncoder, PromptTokens
from crossrank.rerank.templates import Template, template_for

if TYPE_CHECKING:
    from crossrank.models.source import ModelFiles
    from crossrank.rerank.config import Activation, ScoringConfig

__all__ = [
    "DecoderScorer",
    "PromptScorer",
    "batch_limits",
    "batches_by_budget",
    "load_prompt_model",
    "native_bf16",
    "placement_reason",
    "torch_placement",
]

# Qwen3-Reranker's own default; a model's config may allow more (32k), a call may ask for more
_DEFAULT_MAX_LENGTH = 8192


def batches_by_budget(lengths: np.ndarray, *, token_budget: int, max_batch_size: int) -> list[np.ndarray]:
    """Return positions grouped into batches, longest first, each within ``token_budget`` padded tokens.

    A pair longer than the budget gets a batch of its own, so one long document never shares
    (and multiplies) its padding.
    """
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = int(lengths[order[start]])
        size = max(1, min(max_batch_size, token_budget // max(longest, 1)))
        out.append(order[start : start + size])
        start += size
    return out


#: batches on a GPU when the settings keep the CPU defaults: a forward pass there costs its kernel
#: launches more than its arithmetic, so fewer, larger batches run faster (bench/llm_rerank_speed.py)
GPU_TOKEN_BUDGET = 32768
GPU_MAX_BATCH_SIZE = 128


def batch_limits(config: ScoringConfig, device: Any) -> tuple[int, int]:
    """Return ``(token_budget, max_batch_size)``: the settings, or larger ones on a GPU where they are the defaults."""
    from crossrank.rerank.config import ScoringConfig

    default = ScoringConfig()
    if device.type == "cpu":
        return config.token_budget, config.max_batch_size
    budget = GPU_TOKEN_BUDGET if config.token_budget == default.token_budget else config.token_budget
    size = GPU_MAX_BATCH_SIZE if config.max_batch_size == default.max_batch_size else config.max_batch_size
    return budget, size


def torch_placement(config: ScoringConfig) -> tuple[Any, Any]:
    """Return the torch ``(device, dtype)`` of ``config.device`` and ``config.precision``.

    Raises:
        ConfigError: the device is not there (no CUDA or MPS), or fp16/bf16 is asked of a CPU that
            torch cannot run it on.
    """
    import torch

    device = torch.device(config.device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device={config.device!r}, but torch sees no CUDA device (torch.cuda.is_available() is False); "
            "use device='cpu', or install a CUDA build of torch on a machine with a GPU"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={config.device!r}, but this torch has no MPS device; use device='cpu'")
    names = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if config.precision != "auto":
        return device, names[config.precision]
    if device.type == "cuda":
        return device, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return device, torch.float16
    return device, torch.bfloat16 if native_bf16() else torch.float32


def native_bf16(flags: frozenset[str] | None = None) -> bool:
    """Return whether this CPU multiplies bf16 natively (AVX-512 bf16 or AMX) and torch can use it.

    There bf16 weights ran a Qwen3-Reranker-0.6B-sized decoder 2.6x faster than fp32 with the same
    ranking (bench/llm_rerank_speed.py); on other CPUs bf16 is emulated and slower than fp32.
    """
    import torch

    flags = cpu_flags() if flags is None else flags
    return bool(flags & {"avx512_bf16", "amx_bf16"}) and bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]


def dtype_name(dtype: Any) -> str:
    """Return the precision name (``"fp32"``, ``"bf16"``, ``"fp16"``) of a torch dtype."""
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def placement_reason(device: Any, dtype: Any) -> str:
    """Return why a prompt family runs where it does, for the log and ``backend_reason``."""
    import torch

    name = dtype_name(dtype)
    if device.type != "cpu":
        return f"torch {name} on {device}"
    if dtype == torch.bfloat16 and native_bf16():
        return "torch bf16 on the CPU: it has native bf16 (AVX-512 bf16 or AMX)"
    if dtype == torch.float32:
        return "torch fp32 on the CPU: it has no native bf16"
    return f"torch {name} on the CPU"


def left_padded(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(input_ids, attention_mask, position_ids)`` int64 arrays, padded on the left."""
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq) :] = seq
        mask[row, width - len(seq) :] = 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    return input_ids, mask, positions


def load_prompt_model(
    files: ModelFiles,
    *,
    backend: str,
    config: ScoringConfig,
    family: str,
    auto: str,
    template: str | Mapping[str, Any] | None,
    default_template: str | None,
    cap: int,
    bounded: bool,
    **load: Any,
) -> tuple[Any, PromptEncoder]:
    """Load a prompt family's model (``transformers.<auto>``) on its device and its prompt encoder.

    ``max_length`` defaults to the model's limit (``max_position_embeddings``, else ``cap``) capped at
    ``cap``; a larger one is allowed up to the limit when ``bounded`` (absolute or rotary positions),
    and without one when not (T5's relative positions). Shared by the decoder and T5 families.

    Raises:
        ConfigError: ``backend`` is not torch or auto, the folder has no weights, the template needs
            tokens the vocabulary lacks, the device is missing, or the weights do not fit in memory.
        ModelError: transformers cannot load the weights.
    """
    if backend not in ("torch", "auto"):
        raise ConfigError(
            f"{files.name!r} is a {family} reranker, which crossrank runs in torch only for now "
            f"(got backend={backend!r}); use backend='torch' or 'auto'"
        )
    if not files.has_weights:
        raise ConfigError(
            f"{files.name!r} has no Hugging Face weights (model.safetensors); a {family} reranker needs them"
        )
    torch = require("torch", feature=f"the {family} family")
    transformers = require("transformers", feature=f"the {family} family")
    settings = dict(files.settings)
    if template is not None:
        settings["template"] = template
    tpl = template_for(files.name, settings, default=default_template)
    limit = model_max_length(files.config, default=cap)
    length = min(config.max_length or min(limit, cap), limit if bounded else max(limit, config.max_length or cap))
    encoder = PromptEncoder(files.tokenizer_file, tpl, max_length=length, name=files.name)
    device, dtype = torch_placement(config)
    if device.type == "cpu":
        check_memory(files, bytes_per_parameter=dtype.itemsize, what=dtype_name(dtype))
    torch.set_num_threads(config.threads or default_threads())
    try:
        model = getattr(transformers, auto).from_pretrained(str(files.folder), dtype=dtype, **load)
    except (OSError, ValueError, KeyError) as err:
        raise ModelError(f"transformers cannot load {files.folder} ({err})") from err
    return model.to(device).eval(), encoder


class PromptScorer:
    """What the prompt families share: the token ids a pair becomes, and an empty result."""

    backend_reason: str

    prompts: PromptEncoder
    instruction: str | None

    def tokens(
        self, queries: Sequence[str], documents: Sequence[str], *, instruction: str | None = None
    ) -> PromptTokens:
        """Return the token ids the model reads for each pair (template applied, documents cut to fit)."""
        return self.prompts.encode(queries, documents, instruction=instruction or self.instruction)

    @staticmethod
    def _empty() -> ScoredPairs:
        return ScoredPairs(np.zeros((0, 1), dtype=np.float32), np.zeros(0, dtype=np.bool_), np.zeros(0, dtype=np.int32))


class DecoderScorer(PromptScorer):
    """Score pairs with a decoder reranker, in torch.

    Args:
        model: the loaded transformers model (``…ForCausalLM`` or ``…ForSequenceClassification``).
        encoder: the prompt encoder (template, tokenizer, ``max_length``).
        head: float32 ``(rows, hidden)``: the rows the score reads (positive, negative) or the
            classification head.
        family: ``"causal-lm"`` or ``"decoder-classification"``.
        config: scoring settings (token budget, batch size).
        name: the model's name, for messages.
    """

    def __init__(
        self,
        model: Any,
        encoder: PromptEncoder,
        head: Any,
        *,
        family: str,
        config: ScoringConfig,
        name: str = "",
        bias: Any = None,
        softcap: float | None = None,
        instruction: str | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.encoder = None  # no BERT pair encoder: windows and pair checks are not offered
        self.prompts = encoder
        self.template: Template = encoder.template
        self.family = family
        self.name = name
        self.max_length = encoder.max_length
        self.instruction = instruction
        self.progress = progress
        self.backend_name = "torch"
        self.backend_reason = "decoder rerankers run in torch"
        self.labels: tuple[str, ...] = ("score",)
        self.default_activation: Activation = "sigmoid"
        self.device = head.device
        self._head = head
        self._bias = bias
        self._softcap = softcap
        self._difference = family == "causal-lm" and encoder.negative_id is not None
        self._token_budget, self._max_batch_size = batch_limits(config, self.device)
        self.prefix_reuse = config.prefix_reuse and _plain_cache(model.config)
        self.pairs_on_shared_prefix = 0  # pairs scored against a cached prefix, for reports and tests
        pad = getattr(model.config, "pad_token_id", None)
        if pad is None:
            pad = getattr(model.config, "eos_token_id", None)
        if isinstance(pad, (list, tuple)):
            pad = pad[0] if pad else None
        self._pad_id = int(pad) if pad is not None else 0

    @classmethod
    def from_files(
        cls,
        files: ModelFiles,
        *,
        backend: str,
        config: ScoringConfig,
        progress: bool = False,
        reason: str = "",
        family: str = "causal-lm",
        template: str | Mapping[str, Any] | None = None,
        instruction: str | None = None,
    ) -> DecoderScorer:
        """Load a decoder reranker's folder (Hugging Face weights) in torch (:func:`torch_placement`).

        Raises:
            ConfigError: ``backend`` is not torch or auto, the template needs tokens the vocabulary
                lacks, or the folder has no weights.
            ModelError: transformers cannot load the weights.
        """
        auto = "AutoModelForCausalLM" if family == "causal-lm" else "AutoModelForSequenceClassification"
        model, encoder = load_prompt_model(
            files,
            backend=backend,
            config=config,
            family=family,
            auto=auto,
            template=template,
            default_template=None,
            cap=_DEFAULT_MAX_LENGTH,
            bounded=True,
            attn_implementation="sdpa",
        )
        bias = None
        if family == "causal-lm":
            out = model.get_output_embeddings()
            rows = [encoder.positive_id] + ([encoder.negative_id] if encoder.negative_id is not None else [])
            head = out.weight.detach()[rows].clone().float()
            if getattr(out, "bias", None) is not None:
                bias = out.bias.detach()[rows].clone().float()
        else:
            score = model.score if hasattr(model, "score") else model.get_output_embeddings()
            head = score.weight.detach().clone().float()
            if getattr(score, "bias", None) is not None:
                bias = score.bias.detach().clone().float()
        softcap = getattr(model.config, "final_logit_softcapping", None)
        scorer = cls(
            model,
            encoder,
            head,
            family=family,
            config=config,
            name=files.name,
            bias=bias,
            softcap=float(softcap) if softcap else None,
            instruction=instruction,
            progress=progress,
        )
        scorer.backend_reason = placement_reason(head.device, model.dtype)
        return scorer

    def score(self, queries: Sequence[str], documents: Sequence[str], *, instruction: str | None = None) -> ScoredPairs:
        """Return raw scores, float32 ``(n, 1)`` in input order: the log-odds of the positive token.

        With ``prefix_reuse``, the pairs of a query that share at least :data:`MIN_SHARED_TOKENS`
        leading tokens run against one cached prefix.
        """
        import torch

        n = len(queries)
        out = np.zeros((n, 1), dtype=np.float32)
        if n == 0:
            return self._empty()
        enc = self.tokens(queries, documents, instruction=instruction)
        plain: list[int] = []
        shared: list[tuple[int, np.ndarray]] = []
        if self.prefix_reuse:
            by_query: dict[str, list[int]] = {}
            for i, q in enumerate(queries):
                by_query.setdefault(q, []).append(i)
            for rows in by_query.values():
                head = _common_prefix([enc.ids[i] for i in rows]) if len(rows) > 1 else 0
                if head >= MIN_SHARED_TOKENS:
                    shared.append((head, np.asarray(rows)))
                else:
                    plain.extend(rows)
        else:
            plain = list(range(n))
        with torch.inference_mode(), counting(self.progress and n >= 64, "scoring", n, transient=True) as tick:
            if plain:
                todo = np.asarray(plain)
                for part in batches_by_budget(
                    enc.lengths[todo], token_budget=self._token_budget, max_batch_size=self._max_batch_size
                ):
                    idx = todo[part]
                    out[idx, 0] = self._run_padded([enc.ids[i] for i in idx])
                    if tick is not None:
                        tick(len(idx))
            for head, group in shared:
                self._score_shared(enc, group, head, out, tick)
                self.pairs_on_shared_prefix += len(group)
        return ScoredPairs(out, enc.truncated, enc.lengths)

    def _read(self, hidden: Any) -> np.ndarray:
        """Return the raw score of each row of last-token hidden states ``(batch, hidden)``."""
        import torch

        logits = hidden.float() @ self._head.T
        if self._bias is not None:
            logits = logits + self._bias
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        raw = logits[:, 0] - logits[:, 1] if self._difference else logits[:, 0]
        return np.asarray(raw.cpu().numpy(), dtype=np.float32)

    def _run_padded(self, ids: list[list[int]]) -> np.ndarray:
        import torch

        input_ids, mask, positions = left_padded(ids, self._pad_id)
        hidden = self.model.base_model(
            input_ids=torch.from_numpy(input_ids).to(self.device),
            attention_mask=torch.from_numpy(mask).to(self.device),
            position_ids=torch.from_numpy(positions).to(self.device),
        ).last_hidden_state[:, -1, :]
        return self._read(hidden)

    def _score_shared(self, enc: PromptTokens, rows: np.ndarray, head: int, out: np.ndarray, tick: Any) -> None:
        """Score pairs that share their first ``head`` tokens against one cached prefix."""
        import torch
        from transformers import DynamicCache

        base = self.model.base_model
        prefix = torch.tensor([enc.ids[int(rows[0])][:head]], dtype=torch.long, device=self.device)
        cache = base(input_ids=prefix, use_cache=True).past_key_values
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        rests = [enc.ids[int(i)][head:] for i in rows]
        lengths = np.fromiter(map(len, rests), np.int64, count=len(rests))
        for part in batches_by_budget(lengths, token_budget=self._token_budget, max_batch_size=self._max_batch_size):
            b = len(part)
            width = int(lengths[part].max())
            ids = np.full((b, width), self._pad_id, dtype=np.int64)
            mask = np.zeros((b, head + width), dtype=np.int64)
            mask[:, :head] = 1
            for r, j in enumerate(part.tolist()):
                ids[r, : lengths[j]] = rests[j]
                mask[r, head : head + lengths[j]] = 1
            past = DynamicCache(
                ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in layers],
                config=self.model.config,
            )
            hidden = base(
                input_ids=torch.from_numpy(ids).to(self.device),
                attention_mask=torch.from_numpy(mask).to(self.device),
                position_ids=torch.arange(head, head + width, device=self.device).expand(b, -1),
                past_key_values=past,
            ).last_hidden_state
            last = torch.from_numpy(lengths[part] - 1).to(self.device)
            out[rows[part], 0] = self._read(hidden[torch.arange(b, device=self.device), last])
            if tick is not None:
                tick(b)


#: the fewest shared leading tokens worth a cached prefix
MIN_SHARED_TOKENS = 8


def _common_prefix(seqs: list[list[int]]) -> int:
    """Return how many leading tokens all ``seqs`` share, leaving each at least one of its own."""
    first = seqs[0]
    n = min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def _plain_cache(config: Any) -> bool:
    """Return whether every layer keeps a plain key/value cache (no sliding windows)."""
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    types = getattr(config, "layer_types", None) or []
    return all(t == "full_attention" for t in types)

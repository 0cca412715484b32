"""Fine-tune a cross-encoder in plain torch: AdamW, warmup and linear decay, accumulation, bf16,
seeded runs, checkpoints that survive a kill, evaluation on a dev set, and export at the end.

Pairs are tokenized by :class:`~crossrank.models.encoding.PairEncoder`, the same function
inference uses, so a model is trained on exactly what it will be served.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crossrank._deps import require
from crossrank._progress import stderr_progress
from crossrank.cpu import available_cores
from crossrank.errors import ConfigError, InputError, ModelError
from crossrank.models.encoding import PairEncoder
from crossrank.train.data import Group, check_groups
from crossrank.train.losses import LOSSES

__all__ = ["DevSet", "TrainConfig", "TrainResult", "load_trainable", "train"]

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """How to train.

    Attributes:
        loss: one of :data:`crossrank.train.losses.LOSSES`.
        epochs: passes over the groups (fractions allowed); ``max_steps`` wins when set.
        max_steps: optimizer steps to run, or ``None`` for ``epochs``.
        batch_size: groups per forward pass.
        accumulation: forward passes per optimizer step.
        learning_rate: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not on biases and LayerNorm weights).
        warmup: share of the steps spent warming the learning rate up linearly from 0.
        max_length: tokens per pair (query kept whole, document cut), as at inference.
        precision: ``"bf16"`` autocast, ``"fp32"``, or ``"auto"`` (bf16 when the CPU has bf16 instructions).
        seed: seeds the data order, dropout and mining.
        eval_every: evaluate on the dev set every this many steps (0: only at the end).
        checkpoint_every: write a checkpoint every this many steps.
        keep_checkpoints: checkpoints kept (the best is kept apart).
        temperature: softmax temperature of the listwise and KL losses.
        margin: the hinge loss's margin.
        threads: torch threads (default: the CPUs this process may use).
    """

    loss: str = "listwise"
    epochs: float = 1.0
    max_steps: int | None = None
    batch_size: int = 8
    accumulation: int = 1
    learning_rate: float = 2e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    max_length: int = 256
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    seed: int = 13
    eval_every: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    temperature: float = 1.0
    margin: float = 1.0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        for name in ("batch_size", "accumulation", "checkpoint_every", "keep_checkpoints", "max_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 (got {self.max_steps})")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0 (got {self.epochs})")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup must be a share in [0, 1) (got {self.warmup})")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0 (got {self.learning_rate})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16 or fp32 (got {self.precision!r})")

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a dict (round-trips through :meth:`from_dict`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Return a config from :meth:`to_dict`'s output."""
        return cls(**dict(values))


@dataclass(frozen=True, slots=True)
class DevSet:
    """Queries with judged candidates, to evaluate the model while it trains.

    Attributes:
        queries: ``{query_id: text}``.
        documents: ``{doc_id: text}`` for every candidate.
        candidates: ``{query_id: [doc_id, ...]}`` to rerank.
        qrels: ``{query_id: {doc_id: grade}}``.
        measure: the ir-measures measure that picks the best checkpoint (higher is better).
        rel: relevance cut-off for binary measures.
    """

    queries: Mapping[str, str]
    documents: Mapping[str, str]
    candidates: Mapping[str, Sequence[str]]
    qrels: Mapping[str, Mapping[str, int]]
    measure: str = "nDCG@10"
    rel: int | None = None


@dataclass(slots=True)
class TrainResult:
    """What a training run did.

    Attributes:
        output: the run's folder.
        model: the exported Hugging Face folder (the best checkpoint when there is a dev set).
        steps: optimizer steps taken in all (across resumes).
        resumed_from: the step the run resumed from (0 for a fresh run).
        history: one entry per logged step: ``step``, ``loss``, ``lr``, and dev values when evaluated.
        best: the best dev value and its step, when there is a dev set.
        pairs_per_s: training throughput of this process.
    """

    output: Path
    model: Path
    steps: int
    resumed_from: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    pairs_per_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Return what a run did, JSON-ready: model folder, steps, resume point, best, speed, first and last loss."""
        return {
            "model": str(self.model),
            "steps": self.steps,
            "resumed_from": self.resumed_from,
            "best": self.best,
            "pairs_per_s": self.pairs_per_s,
            "first_loss": self.history[0]["loss"] if self.history else None,
            "last_loss": self.history[-1]["loss"] if self.history else None,
        }


def bf16_supported() -> bool:
    """Return whether this CPU has native bf16 instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def load_trainable(source: str | os.PathLike[str], work: Path) -> tuple[Any, Path]:
    """Return a torch cross-encoder with one relevance logit, and the folder its tokenizer is in.

    ``source`` may be a Hugging Face cross-encoder folder, a built-in cross-encoder (converted to
    fp32 first, into ``work``), or a plain encoder checkpoint (such as all-MiniLM-L6-v2), which
    gets a new, randomly initialised one-logit head.

    Raises:
        ModelError: the model has no trainable weights, no classification head and no way to add
            one, or more than one output label.
    """
    torch = require("torch", feature="training")
    transformers = require("transformers", feature="training")
    from crossrank.models.registry import lookup
    from crossrank.models.source import check_encoder_classifier, resolve

    files = resolve(source)
    check_encoder_classifier(files, "train")
    folder = files.folder
    builtin = lookup(files.builtin) if files.builtin else None
    if not files.has_weights:
        if builtin is not None and builtin.kind == "cross-encoder":
            from crossrank.models.convert import convert_builtin

            folder = work / f"start-{builtin.name}"
            if not (folder / "model.safetensors").is_file():
                convert_builtin(builtin.name, folder, overwrite=True)
        else:
            raise ModelError(
                f"{files.name!r} has no trainable weights (only an ONNX/OpenVINO graph); train from a Hugging Face "
                "folder with model.safetensors or pytorch_model.bin"
            )
    config = transformers.AutoConfig.from_pretrained(str(folder))
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
    if type(config) not in mapping:
        raise ModelError(
            f"{files.name!r} is a {config.model_type!r} model, which has no sequence-classification head in "
            "transformers and no way to add one; start from an encoder such as BERT, MiniLM, ELECTRA or RoBERTa"
        )
    has_head = any(a.endswith("ForSequenceClassification") for a in (config.architectures or []))
    if has_head and int(getattr(config, "num_labels", 1)) != 1:
        raise ModelError(
            f"{files.name!r} has a {config.num_labels}-label head; crossrank trains one relevance logit. "
            "Start from its encoder (a folder without the head) or a one-logit cross-encoder"
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.logging.set_verbosity_error()
        from crossrank.models.hf import load_classifier

        model = load_classifier(folder, num_labels=1, dtype=torch.float32)
    if not has_head:
        log.info("%s has no classification head: a new one-logit head was initialised", files.name)
        model.config.architectures = [type(model).__name__]
    if not (folder / "tokenizer.json").is_file():
        raise ModelError(f"{folder} has no tokenizer.json; crossrank encodes pairs with the tokenizers library")
    return model, folder


class _Checkpoints:
    """Checkpoints under ``output/checkpoints/step-N``: written to a temp name, then renamed."""

    def __init__(self, output: Path, keep: int) -> None:
        self.root = output / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        if not self.root.is_dir():
            return None
        done = sorted(p for p in self.root.glob("step-*") if (p / "state.json").is_file() and p.suffix != ".tmp")
        return done[-1] if done else None

    def save(self, step: int, model: Any, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> Path:
        torch = require("torch", feature="training")
        final = self.root / f"step-{step:07d}"
        tmp = self.root / f"step-{step:07d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        model.save_pretrained(str(tmp), safe_serialization=True)
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state()},
            tmp / "trainer.pt",
        )
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in sorted(p for p in self.root.glob("step-*") if p.suffix != ".tmp")[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with p.open("rb") as fh:
            os.fsync(fh.fileno())


def _groups_fingerprint(groups: Sequence[Group]) -> str:
    import hashlib

    h = hashlib.sha256()
    for g in groups:
        h.update(g.query.encode())
        for d in g.documents:
            h.update(b"\x00" + d.encode())
        h.update(np.asarray(g.labels, dtype=np.float64).tobytes())
        if g.teacher is not None:
            h.update(np.asarray(g.teacher, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def _no_decay(name: str) -> bool:
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name or "norm.weight" in name


def score_with(
    model: Any, encoder: PairEncoder, queries: Sequence[str], docs: Sequence[str], *, batch: int = 64
) -> Any:
    """Return the model's relevance logits for pairs (numpy float32), length-sorted and batched."""
    torch = require("torch", feature="training")
    n = len(queries)
    out = np.zeros(n, dtype=np.float32)
    order = np.argsort([len(q) + len(d) for q, d in zip(queries, docs, strict=True)], kind="stable")
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            enc = encoder.encode([queries[i] for i in idx], [docs[i] for i in idx])
            logits = _forward(model, enc, torch)
            out[idx] = logits.float().numpy()
    model.train(was_training)
    return out


def _forward(model: Any, enc: Any, torch: Any) -> Any:
    inputs = {
        "input_ids": torch.from_numpy(enc.input_ids),
        "attention_mask": torch.from_numpy(enc.attention_mask),
    }
    if getattr(model.config, "type_vocab_size", 0) > 1:
        inputs["token_type_ids"] = torch.from_numpy(enc.token_type_ids)
    return model(**inputs).logits[:, 0]


def dev_pairs(dev: DevSet) -> list[tuple[str, str]]:
    """Return the dev set's (query id, doc id) pairs to score: judged queries, candidates with text.

    Raises:
        InputError: no judged query has a candidate with text.
    """
    keys = [
        (q, d)
        for q, cands in dev.candidates.items()
        if q in dev.qrels and q in dev.queries
        for d in cands
        if d in dev.documents
    ]
    if not keys:
        raise InputError("the dev set has no judged query with candidate texts")
    return keys


def dev_measure(dev: DevSet, keys: Sequence[tuple[str, str]], scores: Sequence[float]) -> float:
    """Return ``dev.measure`` of the run the ``scores`` of the ``keys`` make (crossrank's evaluation)."""
    from crossrank.evaluate.metrics import evaluate

    run: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(keys, scores, strict=True):
        run.setdefault(q, {})[d] = float(s)
    result = evaluate({q: dict(v) for q, v in dev.qrels.items()}, {"dev": run}, [dev.measure], rel=dev.rel)
    return float(result.aggregate["dev"][result.measures[0]])


def evaluate_dev(model: Any, encoder: PairEncoder, dev: DevSet) -> float:
    """Return ``dev.measure`` of the model reranking the dev candidates (crossrank's evaluation)."""
    keys = dev_pairs(dev)
    scores = score_with(model, encoder, [dev.queries[q] for q, _ in keys], [dev.documents[d] for _, d in keys])
    return dev_measure(dev, keys, scores.tolist())


def train(
    model: str | os.PathLike[str],
    groups: Sequence[Group],
    output: str | os.PathLike[str],
    *,
    config: TrainConfig | None = None,
    dev: DevSet | None = None,
    resume: bool = True,
    progress: bool = False,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Return the result of training ``model`` on ``groups``; the trained model is in ``output/model``.

    A run writes ``output/checkpoints/step-N`` every ``checkpoint_every`` steps. Started again
    with the same output, data and settings, it resumes from the last checkpoint (weights,
    optimizer, schedule, data position and random state) instead of step 0.

    Args:
        model: the starting point: a Hugging Face cross-encoder folder, a built-in name, or a
            plain encoder checkpoint (which gets a new head).
        groups: training groups (see :mod:`crossrank.train.data`).
        output: the run's folder.
        config: training settings.
        dev: evaluated every ``eval_every`` steps and at the end; the best step is exported.
        resume: continue from the last checkpoint in ``output`` when there is one.
        progress: show a progress bar with the loss and pairs/s.
        on_step: called with (step, loss) after each optimizer step.

    Raises:
        InputError: the groups do not suit the loss (empty, labels out of range...), or ``output``
            holds checkpoints of another run; checked before any training time is spent.
        ModelError: the model cannot be trained (see :func:`load_trainable`).
    """
    cfg = config or TrainConfig()
    groups = check_groups(groups, loss=cfg.loss)
    torch = require("torch", feature="training")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    net, folder = load_trainable(model, out)
    encoder = PairEncoder(folder / "tokenizer.json", max_length=_max_length(net.config, cfg.max_length))
    threads = cfg.threads or available_cores()
    torch.set_num_threads(threads)

    per_epoch = math.ceil(len(groups) / cfg.batch_size)
    total = cfg.max_steps or max(1, math.ceil(per_epoch * cfg.epochs / cfg.accumulation))
    fingerprint = _groups_fingerprint(groups)
    identity = {"model": str(model), "data": fingerprint, "config": cfg.to_dict(), "groups": len(groups)}

    decay = [p for n, p in net.named_parameters() if not _no_decay(n)]
    no_decay = [p for n, p in net.named_parameters() if _no_decay(n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )
    warm = int(cfg.warmup * total)

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    ckpts = _Checkpoints(out, cfg.keep_checkpoints)
    start_step, history, best = 0, [], None
    latest = ckpts.latest() if resume else None
    if latest is not None:
        state = json.loads((latest / "state.json").read_text(encoding="utf-8"))
        if state["identity"] != identity:
            diff = sorted(k for k in identity if identity[k] != state["identity"].get(k))
            raise InputError(
                f"{out} holds checkpoints of another run (different {', '.join(diff)}); use another output folder, "
                "or remove its checkpoints/ to start over"
            )
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(latest / "model.safetensors")), strict=False)
        saved = torch.load(latest / "trainer.pt", weights_only=False)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        torch.set_rng_state(saved["rng"])
        start_step, history, best = state["step"], state["history"], state.get("best")
        log.info("resuming from %s (step %d of %d)", latest, start_step, total)
    elif resume and ckpts.root.is_dir() and any(ckpts.root.iterdir()):
        log.warning("%s holds no complete checkpoint; starting from step 0", ckpts.root)

    use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_supported())
    loss_fn = LOSSES[cfg.loss]
    net.train()
    pairs_done, t0 = 0, time.perf_counter()
    bar = _Bar(total, start_step) if progress else None
    step = start_step
    try:
        while step < total:
            optimizer.zero_grad(set_to_none=True)
            torch.manual_seed(cfg.seed * 1_000_003 + step)  # dropout depends on the step only: resumable
            step_loss = 0.0
            for micro in range(cfg.accumulation):
                batch = _batch(groups, step * cfg.accumulation + micro, cfg.batch_size, per_epoch, cfg.seed)
                logits, labels, teacher, mask, n_pairs = _run_batch(net, encoder, batch, torch, use_bf16)
                loss = loss_fn(
                    logits, labels=labels, teacher=teacher, mask=mask, temperature=cfg.temperature, margin=cfg.margin
                )
                if not torch.isfinite(loss):
                    raise ModelError(f"the loss became {float(loss)} at step {step}; lower the learning rate")
                (loss / cfg.accumulation).backward()  # type: ignore[no-untyped-call]
                step_loss += float(loss.detach()) / cfg.accumulation
                pairs_done += n_pairs
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            entry: dict[str, Any] = {"step": step, "loss": step_loss, "lr": scheduler.get_last_lr()[0]}
            if dev is not None and (step == total or (cfg.eval_every and step % cfg.eval_every == 0)):
                value = evaluate_dev(net, encoder, dev)
                entry[dev.measure] = value
                if best is None or value > best["value"]:
                    best = {"value": value, "step": step, "measure": dev.measure}
                    _save_model(net, folder, out / "best", extra={"step": step, dev.measure: value})
            history.append(entry)
            if on_step is not None:
                on_step(step, step_loss)
            if bar is not None:
                bar.update(step, step_loss, pairs_done / max(1e-9, time.perf_counter() - t0))
            if step % cfg.checkpoint_every == 0 or step == total:
                state = {"step": step, "history": history, "best": best, "identity": identity}
                ckpts.save(step, net, optimizer, scheduler, state)
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    final = out / "model"
    if best is not None and (out / "best").is_dir():
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(out / "best", final)
    else:
        _save_model(net, folder, final, extra={"step": step})
    _write_card(final, model, cfg, len(groups), step, best)
    return TrainResult(
        output=out,
        model=final,
        steps=step,
        resumed_from=start_step,
        history=history,
        best=best,
        pairs_per_s=pairs_done / elapsed if elapsed > 0 else 0.0,
    )


def _max_length(config: Any, wanted: int) -> int:
    limit = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= 2
    return min(wanted, limit)


def _batch(groups: Sequence[Group], micro: int, size: int, per_epoch: int, seed: int) -> list[Group]:
    """Return micro-batch number ``micro``: epochs are seeded permutations, so a resume sees the same data."""
    epoch, index = divmod(micro, per_epoch)
    order = np.random.default_rng(seed + epoch).permutation(len(groups))
    return [groups[i] for i in order[index * size : (index + 1) * size].tolist()]


def _run_batch(net: Any, encoder: PairEncoder, batch: Sequence[Group], torch: Any, bf16: bool) -> tuple[Any, ...]:
    width = max(len(g.documents) for g in batch)
    queries = [g.query for g in batch for _ in g.documents]
    docs = [d for g in batch for d in g.documents]
    enc = encoder.encode(queries, docs)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
        flat = _forward(net, enc, torch)
    flat = flat.float()
    b = len(batch)
    logits = torch.zeros((b, width), dtype=torch.float32)
    labels = torch.zeros((b, width), dtype=torch.float32)
    teacher = torch.zeros((b, width), dtype=torch.float32)
    mask = torch.zeros((b, width), dtype=torch.bool)
    rows = torch.tensor([i for i, g in enumerate(batch) for _ in g.documents])
    cols = torch.tensor([j for g in batch for j in range(len(g.documents))])
    logits = logits.index_put((rows, cols), flat)
    labels[rows, cols] = torch.tensor([x for g in batch for x in g.labels], dtype=torch.float32)
    if all(g.teacher is not None for g in batch):
        teacher[rows, cols] = torch.tensor([x for g in batch for x in (g.teacher or ())], dtype=torch.float32)
    mask[rows, cols] = True
    return logits, labels, teacher, mask, len(docs)


def _save_model(net: Any, tokenizer_folder: Path, dest: Path, *, extra: Mapping[str, Any]) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    net.save_pretrained(str(tmp), safe_serialization=True)
    for name in _TOKENIZER_FILES:
        if (tokenizer_folder / name).is_file():
            shutil.copy2(tokenizer_folder / name, tmp / name)
    # sentence-transformers reads the activation from here; crossrank too
    cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
    cfg["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Sigmoid"}
    cfg["crossrank_training"] = dict(extra)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)


def _write_card(folder: Path, start: Any, cfg: TrainConfig, groups: int, steps: int, best: Any) -> None:
    lines = [
        "# Cross-encoder trained with crossrank",
        "",
        f"Started from `{start}`; {groups} training groups, {steps} optimizer steps, loss `{cfg.loss}`.",
        "",
    ]
    if best:
        lines += [f"Best dev {best['measure']}: {best['value']:.4f} at step {best['step']} (this checkpoint).", ""]
    lines += ["Settings:", "", "```json", json.dumps(cfg.to_dict(), indent=2), "```", ""]
    (folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


class _Bar:
    """A rich progress bar with the loss and pairs/s."""

    def __init__(self, total: int, done: int) -> None:
        from rich.progress import TextColumn

        self._p = stderr_progress(
            "training",
            unit="steps",
            extra=[TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} pairs/s")],
        )
        self._p.start()
        self._task = self._p.add_task("train", total=total, completed=done, loss=float("nan"), rate=0.0)

    def update(self, step: int, loss: float, rate: float) -> None:
        self._p.update(self._task, completed=step, loss=loss, rate=rate)

    def close(self) -> None:
        self._p.stop()


def with_defaults(cfg: TrainConfig | None, **changes: Any) -> TrainConfig:
    """Return ``cfg`` (or the default config) with ``changes`` applied and validated."""
    return replace(cfg or TrainConfig(), **changes)

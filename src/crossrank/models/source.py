"""Resolve a model reference (built-in name, folder, ONNX file or hub id) to files on disk."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from crossrank.errors import InputError, ModelError, ModelNotFoundError
from crossrank.models.registry import builtin_names, lookup

__all__ = ["ModelFiles", "resolve"]

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
)
_HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "pytorch_model.bin",
    "vocab.txt",
    "merges.txt",
    "*.model",
    "onnx/model.onnx",
    "model.onnx",
]
#: seconds the hub client may wait for an answer before crossrank reports being offline
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """Where a model's files are and what they hold.

    Attributes:
        name: what the user called the model (built-in name, path or hub id).
        folder: the folder holding tokenizer and config.
        tokenizer_file: the ``tokenizer.json`` to load with the tokenizers library.
        onnx_file: the ONNX graph, if the folder has one.
        has_weights: whether the folder holds Hugging Face weights for the torch backend.
        config: the Hugging Face ``config.json`` contents (or the built-in's config).
        settings: crossrank settings saved beside the model (``crossrank.json``), e.g. activation.
        builtin: the canonical built-in name, if it is one.
        kind: ``"cross-encoder"``, or ``"bi-encoder"`` for built-in dense retrieval models.
    """

    name: str
    folder: Path
    tokenizer_file: Path
    onnx_file: Path | None
    has_weights: bool
    openvino_file: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    builtin: str | None = None
    kind: str = "cross-encoder"

    def pick_backend(self, backend: BackendName) -> str:
        """Return the backend to use; deprecated: use :func:`crossrank.engine.choose_backend`."""
        return self.choose_backend(backend)[0]

    def choose_backend(self, backend: BackendName) -> tuple[str, str]:
        """Return the backend to use and why; deprecated: use :func:`crossrank.engine.choose_backend`."""
        import warnings

        warnings.warn(
            "ModelFiles.choose_backend is deprecated; use crossrank.engine.choose_backend(files, backend)",
            DeprecationWarning,
            stacklevel=2,
        )
        import importlib

        # a deprecated alias of a layer above: looked up at call time, so models/ imports nothing above it
        choice = importlib.import_module("crossrank.engine.choice")
        return choice.choose_backend(self, backend)  # type: ignore[no-any-return]


BackendName = Literal["auto", "onnx", "torch", "openvino"]


#: model types whose ``…ForSequenceClassification`` is a decoder read at the last token
DECODER_MODEL_TYPES = frozenset(
    {
        "gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "gpt_neox", "granite", "llama", "mistral",
        "mixtral", "olmo", "olmo2", "phi", "phi3", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "smollm3",
    }
)  # fmt: skip


def check_encoder_classifier(files: ModelFiles, action: str) -> None:
    """Refuse, in one line, to ``action`` a decoder or T5 reranker (only encoder classifiers can be).

    Raises:
        ConfigError: the config names a causal LM, a sequence-to-sequence model, or a decoder classifier.
    """
    from crossrank.errors import ConfigError

    architectures = [str(a) for a in files.config.get("architectures") or []]
    decoder = files.config.get("model_type") in DECODER_MODEL_TYPES
    for arch in architectures:
        if arch.endswith(("ForCausalLM", "ForConditionalGeneration")) or decoder:
            raise ConfigError(
                f"crossrank cannot {action} {files.name!r} ({arch}) yet: only encoder cross-encoders "
                "(…ForSequenceClassification on BERT, ELECTRA, RoBERTa/XLM-R, DistilBERT, ModernBERT) can be; "
                "decoder and T5 rerankers score in torch (see docs/families.md)"
            )


def weights_parameters(folder: str | os.PathLike[str]) -> int | None:
    """Return how many parameters the ``*.safetensors`` files of ``folder`` hold (from their headers), or ``None``."""
    import json
    import struct

    total = 0
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    for file in files:
        try:
            with file.open("rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(size))
        except (OSError, ValueError, struct.error):
            return None
        for name, meta in header.items():
            if name != "__metadata__":
                count = 1
                for dim in meta.get("shape", []):
                    count *= int(dim)
                total += count
    return total


def check_memory(files: ModelFiles, *, bytes_per_parameter: int = 4, what: str = "fp32") -> None:
    """Refuse, before loading, a model whose weights would not fit in the memory this process has left.

    Raises:
        ConfigError: the weights (at ``bytes_per_parameter``) need more than the memory available.
    """
    from crossrank.cpu import available_memory
    from crossrank.errors import ConfigError

    params = weights_parameters(files.folder)
    free = available_memory()
    if params is None or free is None:
        return
    need = params * bytes_per_parameter
    if need > free:
        raise ConfigError(
            f"{files.name!r} has {params / 1e6:,.1f}M parameters: about {need / 2**30:.2f} GiB in {what}, and this "
            f"process has {free / 2**30:.2f} GiB left; free memory, raise the container's limit, or pick a "
            "smaller model"
        )


def has_openvino(*, runtime_only: bool = False) -> bool:
    """Return whether OpenVINO is installed (and NNCF, which builds int8 graphs, unless ``runtime_only``)."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return False
    return runtime_only or importlib.util.find_spec("nncf") is not None


def resolve(source: str | os.PathLike[str]) -> ModelFiles:
    """Return the files of the model named by ``source``.

    ``source`` is tried, in order, as a built-in name, a local folder or ``.onnx`` file, and a
    Hugging Face hub id (downloaded through ``huggingface_hub``, which needs internet).

    Raises:
        ModelNotFoundError: nothing answers to ``source``.
        ModelError: the folder lacks a tokenizer, a config or weights, or a file is corrupt.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"model must be a name, path or hub id (got {type(source).__name__} {source!r})")
    text = os.fspath(source)
    if not text.strip():
        raise InputError(f"model must be a non-empty name, path or hub id (got {text!r}); try 'default'")
    builtin = lookup(text)
    if builtin is not None:
        folder = builtin.folder()
        onnx = folder / "model.onnx"
        return ModelFiles(
            name=text,
            folder=folder,
            tokenizer_file=folder / "tokenizer.json",
            onnx_file=onnx if onnx.is_file() else None,
            has_weights=any((folder / w).is_file() for w in _WEIGHT_FILES),
            config=dict(builtin.hf_config) or _read_json(folder / "config.json"),
            builtin=builtin.name,
            kind=builtin.kind,
        )
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(path, name=text)
    if _HUB_ID.match(text) and not text.startswith((".", "/")):
        return _from_path(_download(text), name=text)
    raise ModelNotFoundError(
        f"no model called {text!r}: it is not a built-in ({', '.join(builtin_names())}), not an existing "
        "path, and not a hub id of the form 'org/name'"
    )


def _from_path(path: Path, *, name: str) -> ModelFiles:
    onnx_file: Path | None = None
    if path.is_file():
        if path.suffix != ".onnx":
            raise ModelError(f"model path {path} is a file but not an .onnx graph; pass the model's folder instead")
        onnx_file, folder = path, path.parent
    else:
        folder = path
        for candidate in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
            if candidate.is_file():
                onnx_file = candidate
                break
    openvino_file = next(
        (
            f
            for f in (folder / "model.xml", folder / "openvino_model.xml", folder / "openvino" / "model.xml")
            if f.is_file()
        ),
        None,
    )
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    settings = _read_json(folder / "crossrank.json") if (folder / "crossrank.json").is_file() else {}
    has_weights = any((folder / w).is_file() for w in _WEIGHT_FILES)
    if onnx_file is None and not has_weights and openvino_file is None:
        raise ModelError(
            f"model folder {folder} holds no model: expected model.onnx, onnx/model.onnx, model.xml (OpenVINO), "
            "model.safetensors or pytorch_model.bin"
        )
    if has_weights and not config:
        raise ModelError(f"model folder {folder} has weights but no config.json; save the model with save_pretrained()")
    return ModelFiles(
        name=name,
        folder=folder,
        tokenizer_file=_tokenizer_file(folder),
        onnx_file=onnx_file,
        has_weights=has_weights,
        openvino_file=openvino_file,
        config=config,
        settings=settings,
    )


def _tokenizer_file(folder: Path) -> Path:
    """Return ``folder/tokenizer.json``, building it from slow-tokenizer files when transformers can."""
    fast = folder / "tokenizer.json"
    if fast.is_file():
        return fast
    slow = [f for f in ("vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json") if (folder / f).is_file()]
    if not slow:
        raise ModelError(
            f"model folder {folder} is missing its tokenizer (no tokenizer.json, vocab.txt or sentencepiece "
            "model); save it beside the model with tokenizer.save_pretrained(folder)"
        )
    try:
        from transformers import AutoTokenizer
    except ImportError as err:
        raise ModelError(
            f"model folder {folder} has only a slow tokenizer ({slow[0]}); converting it needs transformers: "
            'pip install "crossrank[torch]", or save a tokenizer.json beside the model'
        ) from err
    tok = AutoTokenizer.from_pretrained(folder)
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"model folder {folder}: the tokenizer has no fast (tokenizers) version")
    tok.backend_tokenizer.save(str(fast))
    log.info("built %s from %s", fast, slow[0])
    return fast


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path} is not valid JSON ({err}); restore the file from the model's source") from err
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object (got {type(data).__name__})")
    return data


def _download(repo_id: str) -> Path:
    """Download (or find in the local cache) a hub model, failing fast when offline."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        pass
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, etag_timeout=HUB_TIMEOUT_S))
    except RepositoryNotFoundError as err:
        raise ModelNotFoundError(
            f"no model {repo_id!r} on the Hugging Face hub (or it is private); check the id, or run "
            "`huggingface-cli login` for a private model"
        ) from err
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise ModelNotFoundError(
            f"could not download {repo_id!r} from the Hugging Face hub and it is not in the local cache "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); connect to the internet, or pass a "
            "local model folder, or use a built-in such as 'default'"
        ) from err

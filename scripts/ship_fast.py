"""Copy a distilled model into the package as the built-in `fast` model and print its sha256s.

    python scripts/ship_fast.py runs/fast

Takes `<run>/onnx/model.onnx` (ONNX Runtime dynamic int8, the same kind of file as the default's),
the tokenizer files, and writes the model card `<run>/CARD.md` (if present) as README.md.
The printed sha256s go into `crossrank/models/registry.py`.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "src" / "crossrank" / "models" / "data" / "fast"
FILES = ("model.onnx", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def _strip_wrapper_names(src: Path, dest: Path) -> None:
    """Save the graph with Hugging Face weight names (the exporter's wrapper adds an ``inner.`` prefix)."""
    import onnx

    model = onnx.load(str(src))
    graph = model.graph

    def fix(name: str) -> str:
        return name[len("inner.") :] if name.startswith("inner.") else name

    for t in graph.initializer:
        t.name = fix(t.name)
    for node in graph.node:
        node.input[:] = [fix(i) for i in node.input]
        node.output[:] = [fix(o) for o in node.output]
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))


def main() -> None:
    run = Path(sys.argv[1])
    DEST.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        src = run / "onnx" / name
        if not src.is_file():
            raise SystemExit(f"{src} is missing: run `crossrank distill --recipe recipes/fast.toml` first")
        if name == "model.onnx":
            _strip_wrapper_names(src, DEST / name)
        else:
            shutil.copy2(src, DEST / name)
    if (run / "CARD.md").is_file():
        shutil.copy2(run / "CARD.md", DEST / "README.md")
    for name in FILES:
        digest = hashlib.sha256((DEST / name).read_bytes()).hexdigest()
        print(f'            "{name}": "{digest}",')
    size = sum((DEST / n).stat().st_size for n in FILES) / 1e6
    print(f"# {size:.1f} MB in {DEST}")


if __name__ == "__main__":
    main()

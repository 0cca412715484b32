"""The source's structure, checked: layers, private names, the public API, logging and the environment.

``docs/architecture.md`` describes the layers; this test holds the code to it with no exceptions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import crossrank

SRC = Path(crossrank.__file__).parent

#: each layer and the layers it may import, lowest first (a package's own modules are always allowed)
LAYERS: dict[str, set[str]] = {
    "base": set(),
    "models": {"base"},
    "engine": {"base", "models"},
    "rerank": {"base", "models", "engine"},
    "retrieve": {"base", "models", "engine"},
    "pipeline": {"base", "models", "engine", "rerank", "retrieve"},
    "evaluate": {"base", "models", "engine", "rerank", "retrieve", "pipeline"},
    "train": {"base", "models", "engine", "rerank", "retrieve", "pipeline", "evaluate"},
    "serve": {"base", "models", "engine", "rerank", "retrieve", "pipeline"},
    "scale": {"base", "models", "engine", "rerank", "retrieve", "pipeline", "serve"},
    "cli": {
        "base",
        "models",
        "engine",
        "rerank",
        "retrieve",
        "pipeline",
        "evaluate",
        "train",
        "serve",
        "scale",
        "facade",
    },
}
BASE = {
    "errors",
    "_deps",
    "_logs",
    "_progress",
    "_text",
    "_version",
    "cpu",
    "documents",
    "io",
    "ranking",
    "settings",
    "signals",
    "drift",
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "facade"  # `crossrank` itself: the flat public API, loaded lazily
    if parts[1] in BASE:
        return "base"
    if parts[1] == "pipeline":
        return "pipeline"
    assert parts[1] in LAYERS, f"{module} is on no layer: add its package to LAYERS and docs/architecture.md"
    return parts[1]


def _imports() -> list[tuple[str, str, str | None, int]]:
    """Return (importer, imported module, imported name or None, line) for every crossrank import, lazy ones too."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        importer = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("crossrank"):
                found.extend((importer, node.module or "", a.name, node.lineno) for a in node.names)
            elif isinstance(node, ast.Import):
                found.extend(
                    (importer, a.name, None, node.lineno) for a in node.names if a.name.startswith("crossrank")
                )
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    wrong = []
    for importer, imported, _, line in _imports():
        mine, theirs = _layer(importer), _layer(imported)
        if mine == "facade" or mine == theirs:
            continue
        if theirs not in LAYERS[mine]:
            wrong.append(f"{importer}:{line} ({mine}) imports {imported} ({theirs})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_module_imports_a_private_name_of_another_package() -> None:
    def package(module: str) -> str:
        return module.split(".")[1] if "." in module else ""

    wrong = [
        f"{importer}:{line} imports {name} from {imported}"
        for importer, imported, name, line in _imports()
        if name is not None
        and name.startswith("_")
        and not name.startswith("__")
        and package(importer) != package(imported)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_public_api_is_exactly_this() -> None:
    assert crossrank.__all__ == [
        "BM25Settings",
        "BiEncoder",
        "ConfigError",
        "CrossEncoder",
        "CrossrankError",
        "Hit",
        "Index",
        "InputError",
        "MissingDependencyError",
        "ModelError",
        "ModelNotFoundError",
        "Pipeline",
        "Ranking",
        "ScoredPairs",
        "ScoringConfig",
        "SearchHit",
        "SearchResult",
        "__version__",
    ]
    for name in crossrank.__all__:
        assert getattr(crossrank, name) is not None


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_every_name_a_module_exports_exists(path: Path) -> None:
    import importlib

    module = _module(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared = [
        node
        for node in tree.body
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets))
        or (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "__all__")
    ]
    if not declared:
        assert (
            path.name == "__init__.py"
            or path.name.startswith("_")
            or "cli" in path.parts
            or module.endswith("__main__")
        ), f"{module} declares no __all__"
        return
    names = ast.literal_eval(declared[0].value)
    assert len(set(names)) == len(names), f"{module}.__all__ repeats a name"
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_the_library_leaves_logging_and_the_environment_to_the_application() -> None:
    """Outside the command line (an application), no log level, handler or environment variable is set."""
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(SRC)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Attribute) and node.attr in {"setLevel", "basicConfig", "addHandler", "putenv"}:
                wrong.append(f"{where} calls {node.attr}")
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                wrong.extend(f"{where} writes os.environ" for t in targets if "environ[" in ast.unparse(t))
            if isinstance(node, ast.Call) and ast.unparse(node.func).endswith(
                ("environ.setdefault", "environ.update", "environ.pop", "environ.clear")
            ):
                wrong.append(f"{where} calls {ast.unparse(node.func)}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_the_pipeline_moved_above_both_stages_and_its_old_path_warns() -> None:
    import crossrank.pipeline
    import crossrank.retrieve.pipeline as old

    with pytest.warns(DeprecationWarning, match="crossrank.pipeline.Pipeline"):
        moved = old.Pipeline
    assert moved is crossrank.pipeline.Pipeline is crossrank.Pipeline

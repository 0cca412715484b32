"""Model sources: built-in models, local folders, ONNX folders and hub ids."""

from crossrank.models.registry import BUILTINS, BuiltinModel, builtin_names
from crossrank.models.source import ModelFiles, resolve

__all__ = ["BUILTINS", "BuiltinModel", "ModelFiles", "builtin_names", "resolve"]

"""The HTTP rerank service: Cohere v1/v2, Jina and TEI compatible endpoints over a cross-encoder.

Needs the ``serve`` extra (FastAPI, uvicorn, prometheus_client): ``pip install "crossrank[serve]"``.

Example:
    >>> from crossrank.serve import ServeConfig, create_app  # doctest: +SKIP
    >>> app = create_app("default", config=ServeConfig(max_wait_ms=5))  # doctest: +SKIP
    >>> uvicorn.Server(uvicorn_config(app, host="127.0.0.1", port=8080)).run()  # doctest: +SKIP
"""

from __future__ import annotations

from crossrank._deps import require

for _module in ("fastapi", "uvicorn", "prometheus_client"):
    require(_module, feature="crossrank serve")  # MissingDependencyError: pip install "crossrank[serve]"
del _module

from crossrank.serve.app import create_app  # noqa: E402
from crossrank.serve.config import ApiKeys, ServeConfig  # noqa: E402
from crossrank.serve.server import uvicorn_config  # noqa: E402

__all__ = ["ApiKeys", "ServeConfig", "create_app", "uvicorn_config"]

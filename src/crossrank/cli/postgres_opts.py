"""The options naming a Postgres table as a first stage, shared by ``search``, ``serve`` and ``eval``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from crossrank.errors import InputError

POSTGRES_RETRIEVERS = ("postgres", "postgres-vector", "postgres-hybrid")

DsnOpt = Annotated[
    str | None,
    typer.Option(
        help="--retriever postgres*: the server, as postgresql://user@host:5432/dbname or 'host=... dbname=...'."
    ),
]
TableOpt = Annotated[
    str | None, typer.Option("--table", help="--retriever postgres*: the table (name or schema.name).")
]
IdColumnOpt = Annotated[str, typer.Option(help="--retriever postgres*: the column of document ids.")]
TextColumnsOpt = Annotated[
    str, typer.Option(help="--retriever postgres*: the text columns, comma separated (with two or more: title first).")
]
VectorColumnOpt = Annotated[
    str | None, typer.Option(help="--retriever postgres-vector|postgres-hybrid: the pgvector column of embeddings.")
]
TsvectorColumnOpt = Annotated[
    str | None, typer.Option(help="--retriever postgres*: a stored tsvector column to search (e.g. with a GIN index).")
]


def is_postgres(retriever: str | None) -> bool:
    """Return whether ``retriever`` names a Postgres first stage."""
    return retriever in POSTGRES_RETRIEVERS


def postgres_stage(
    retriever: str,
    dsn: str | None,
    table: str | None,
    id_column: str,
    text_columns: str,
    vector_column: str | None,
    tsvector_column: str | None,
) -> Any:
    """Return the Postgres first stage the options name (it is also the document store)."""
    from crossrank.retrieve.postgres import PostgresTable, open_postgres

    if not dsn or not table:
        raise InputError(f"--retriever {retriever} needs --dsn (the server) and --table (the table to search)")
    mapping = PostgresTable(
        table,
        id_column=id_column,
        text_columns=tuple(c.strip() for c in text_columns.split(",") if c.strip()),
        vector_column=vector_column,
        tsvector_column=tsvector_column,
    )
    return open_postgres(dsn, mapping, retriever=retriever)

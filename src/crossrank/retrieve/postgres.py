"""Postgres as a first stage: full-text search, pgvector similarity, or both fused, over a table you already have.

:func:`open_postgres` reads an existing table through a DSN and a :class:`PostgresTable` mapping
(the table, its id column, its text columns, optionally a ``vector`` column and a ``tsvector``
column). Every search and every read runs in a read-only transaction: crossrank never writes the
table. :func:`build_postgres_table` is the one writer: it creates a new table from a corpus
(``crossrank index build --target postgres``).

- ``postgres``: ``ts_rank`` (or ``ts_rank_cd``) of the table's text against the query, as
  ``to_tsvector`` reads them. By default the query's words are OR-ed (``match="or"``):
  ``websearch_to_tsquery`` ANDs them, and a natural-language question then matches almost
  nothing (figures in ``docs/bench-postgres-quality.json``).
- ``postgres-vector``: cosine similarity (``1 - (vector <=> query)``) with the query's vector
  from crossrank's dense model (:class:`~crossrank.retrieve.embed.BiEncoder`); needs pgvector.
- ``postgres-hybrid``: the two fused by :class:`~crossrank.retrieve.retrievers.Hybrid`.

Each is also the :class:`~crossrank.retrieve.protocols.DocumentStore` of the table, so the
reranker reads the texts from Postgres. Errors say what was wrong and how to fix it, in one line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from crossrank._deps import require
from crossrank.errors import ConfigError, InputError, ServerUnavailableError
from crossrank.retrieve.protocols import Retrieved, check_request
from crossrank.retrieve.retrievers import HYBRID_POOL, Fusion, Hybrid

if TYPE_CHECKING:
    from crossrank.retrieve.embed import BiEncoder

__all__ = [
    "POSTGRES_RETRIEVERS",
    "PostgresFullText",
    "PostgresHybrid",
    "PostgresStore",
    "PostgresTable",
    "PostgresVector",
    "build_postgres_table",
    "open_postgres",
]

log = logging.getLogger(__name__)

PostgresRetriever = Literal["postgres", "postgres-vector", "postgres-hybrid"]
#: the first stages :func:`open_postgres` makes
POSTGRES_RETRIEVERS: tuple[str, ...] = ("postgres", "postgres-vector", "postgres-hybrid")
Match = Literal["or", "and"]
Ranking = Literal["ts_rank", "ts_rank_cd"]
#: seconds to wait for the server when connecting, unless the DSN says otherwise
CONNECT_TIMEOUT_S = 10
_NAME = re.compile(r"^[^\x00]+$")


def _psycopg() -> Any:
    return require("psycopg", feature="the Postgres first stage")


@dataclass(frozen=True, slots=True)
class PostgresTable:
    """Where a table keeps what a first stage reads.

    Attributes:
        table: the table, ``name`` or ``schema.name`` (as written, not folded to lower case).
        id_column: the documents' ids (any type; crossrank reads them as text).
        text_columns: the columns searched and reranked; with more than one, the first is the
            record's ``title`` and the others, joined by spaces, its ``text``.
        vector_column: a pgvector ``vector`` column of document embeddings (for ``postgres-vector``
            and ``postgres-hybrid``), made by the same model as the query's (default ``bge-small-en``).
        tsvector_column: a ``tsvector`` column (such as a generated one with a GIN index) that full-text
            search reads instead of computing ``to_tsvector`` of the text columns per row.
        language: the text search configuration of ``to_tsvector`` and the query (``english``, ``simple``, ...).

    Raises:
        ConfigError: a name is empty, or no text column is given.
    """

    table: str
    id_column: str = "id"
    text_columns: tuple[str, ...] = ("text",)
    vector_column: str | None = None
    tsvector_column: str | None = None
    language: str = "english"

    def __post_init__(self) -> None:
        if isinstance(self.text_columns, str):
            object.__setattr__(self, "text_columns", tuple(c.strip() for c in self.text_columns.split(",")))
        if not self.text_columns:
            raise ConfigError("text_columns must name at least one column (got none); e.g. --text-columns title,text")
        for what, value in (
            ("table", self.table),
            ("id_column", self.id_column),
            *(("text_columns", c) for c in self.text_columns),
            ("vector_column", self.vector_column or "-"),
            ("tsvector_column", self.tsvector_column or "-"),
            ("language", self.language),
        ):
            if not isinstance(value, str) or not value.strip() or not _NAME.match(value):
                raise ConfigError(f"{what} must be a non-empty name (got {value!r})")

    def columns(self) -> tuple[str, ...]:
        """Return every column named, each once: id, texts, then the vector and tsvector columns."""
        named = (self.id_column, *self.text_columns, self.vector_column, self.tsvector_column)
        return tuple(dict.fromkeys(c for c in named if c))


# ---------------------------------------------------------------------- the table, read-only


class PostgresStore:
    """A table in Postgres, read through a small connection pool in read-only transactions.

    It is the :class:`~crossrank.retrieve.protocols.DocumentStore` of the table; the first stages
    below search it. Opening it connects once and checks the table, its columns and the SELECT
    permission, so a wrong setting fails at once with a message saying how to fix it.

    Args:
        dsn: a libpq connection string or URI (``postgresql://user@host:5432/db``, ``host=/tmp dbname=db``).
        mapping: which table and columns to read.
        pool_size: most connections open at once (concurrent searches share them).

    Raises:
        ConfigError: ``dsn`` is malformed.
        ServerUnavailableError: the server cannot be reached, or refuses the login.
        InputError: the table or a column is missing, or the user may not read the table.
        MissingDependencyError: psycopg is not installed (``pip install "crossrank[postgres]"``).
    """

    def __init__(self, dsn: str, mapping: PostgresTable, *, pool_size: int = 4) -> None:
        psycopg = _psycopg()
        pool_mod = require("psycopg_pool", feature="the Postgres first stage")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ConfigError(f"pool_size must be a whole number >= 1 (got {pool_size!r})")
        self.mapping = mapping
        self._params = _conninfo(dsn)
        self.where = _where(self._params)
        first = _connect(self._params, self.where)
        try:
            with first.transaction():
                self.columns = self._check(first)
                self.has_vector_extension = _has_vector(first)
        except psycopg.Error as err:
            raise _translate(err, self) from err
        finally:
            first.close()
        self._id_type = self.columns[mapping.id_column]
        self._pool = pool_mod.ConnectionPool(
            "",
            kwargs=self._params,
            min_size=1,
            max_size=pool_size,
            open=False,
            configure=_read_only,
            check=pool_mod.ConnectionPool.check_connection,  # a server restart costs no failed search
            name="crossrank-postgres",
        )
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PostgresStore({self.where}, table={self.mapping.table!r})"

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()

    # ------------------------------------------------------------------ checks at open

    def _check(self, conn: Any) -> dict[str, str]:
        """Return the table's columns and their types; raise when the table, a column or a permission is missing."""
        m = self.mapping
        qualified = _table_sql(m.table).as_string(conn)
        row = conn.execute("SELECT to_regclass(%s)::oid", (qualified,)).fetchone()
        if row is None or row[0] is None:
            seen = [
                r[0]
                for r in conn.execute(
                    "SELECT CASE WHEN table_schema = 'public' THEN table_name "
                    "ELSE table_schema || '.' || table_name END "
                    "FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') "
                    "ORDER BY 1 LIMIT 20"
                ).fetchall()
            ]
            raise InputError(
                f"table {m.table!r} does not exist in {self.where}; check --table "
                f"(tables here: {', '.join(seen) if seen else 'none'})"
            )
        oid = row[0]
        cols = dict(
            conn.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (oid,),
            ).fetchall()
        )
        for option, names in (
            ("--id-column", [m.id_column]),
            ("--text-columns", list(m.text_columns)),
            ("--vector-column", [m.vector_column] if m.vector_column else []),
            ("--tsvector-column", [m.tsvector_column] if m.tsvector_column else []),
        ):
            for name in names:
                if name not in cols:
                    raise InputError(
                        f"table {m.table!r} has no column {name!r}; check {option} (its columns: {', '.join(cols)})"
                    )
        if m.vector_column and not cols[m.vector_column].startswith("vector"):
            raise InputError(
                f"column {m.vector_column!r} of {m.table!r} is {cols[m.vector_column]}, not a pgvector vector; "
                "check --vector-column"
            )
        if m.tsvector_column and cols[m.tsvector_column] != "tsvector":
            raise InputError(
                f"column {m.tsvector_column!r} of {m.table!r} is {cols[m.tsvector_column]}, not a tsvector; "
                "check --tsvector-column"
            )
        allowed = conn.execute(
            "SELECT has_table_privilege(%s::oid, 'SELECT') OR "
            "(SELECT bool_and(has_column_privilege(%s::oid, c, 'SELECT')) FROM unnest(%s::text[]) AS c)",
            (oid, oid, list(m.columns())),
        ).fetchone()
        if not allowed or not allowed[0]:
            user = conn.execute("SELECT current_user").fetchone()[0]
            raise InputError(
                f"user {user!r} may not read table {m.table!r} in {self.where}; as its owner run: "
                f"GRANT SELECT ON {'.'.join(_ident(part) for part in m.table.split('.', 1))} TO {_ident(user)}"
            )
        return cols

    def require_vectors(self, retriever: str) -> None:
        """Raise unless the vector path can run: pgvector in the database and a vector column named.

        Raises:
            InputError: the ``vector`` extension is missing, or no vector column was named.
        """
        if not self.has_vector_extension:
            raise InputError(
                f"{retriever} needs pgvector, and the extension is missing in {self.where}: run CREATE EXTENSION "
                "vector (pgvector must be installed on the server), or use --retriever postgres"
            )
        if not self.mapping.vector_column:
            raise InputError(
                f"{retriever} needs the column of document vectors: give --vector-column "
                f"(the columns of {self.mapping.table!r}: {', '.join(self.columns)})"
            )

    def vector_dim(self) -> int | None:
        """Return the dimension the vector column declares (``vector(384)``: 384), or ``None`` when it declares none."""
        col = self.mapping.vector_column
        found = re.fullmatch(r"vector\((\d+)\)", self.columns.get(col or "", ""))
        return int(found.group(1)) if found else None

    # ------------------------------------------------------------------ reading

    @contextmanager
    def connection(self) -> Iterator[Any]:
        """Yield a pooled connection in a read-only transaction; psycopg errors become crossrank's."""
        psycopg = _psycopg()
        pool_mod = require("psycopg_pool", feature="the Postgres first stage")
        try:
            with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                yield conn
        except psycopg.Error as err:
            raise _translate(err, self) from err
        except pool_mod.PoolTimeout as err:
            raise ServerUnavailableError(
                f"no connection to the Postgres server at {self.where} within {CONNECT_TIMEOUT_S} s; "
                "check that it is running and reachable"
            ) from err

    def __len__(self) -> int:
        with self.connection() as conn:
            return int(
                conn.execute(_sql().SQL("SELECT count(*) FROM {}").format(_table_sql(self.mapping.table))).fetchone()[0]
            )

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Return the records ``{"id", "title", "text"}`` of ``ids``, in order (``None``: no such row).

        Raises:
            ServerUnavailableError: the server went away.
        """
        if isinstance(ids, str):
            raise InputError("pass a list of ids, not one string")
        wanted = [str(i) for i in ids]
        if not wanted:
            return []
        sql, m = _sql(), self.mapping
        query = sql.SQL("SELECT {id}::text, {texts} FROM {table} WHERE {id} = ANY(CAST(%s AS {idtype}[]))").format(
            id=sql.Identifier(m.id_column),
            texts=sql.SQL(", ").join(sql.Identifier(c) for c in m.text_columns),
            table=_table_sql(m.table),
            idtype=sql.SQL(self._id_type),
        )
        with self.connection() as conn:
            rows = conn.execute(query, (sorted(set(wanted)),)).fetchall()
        found = {r[0]: _record(r[0], r[1:]) for r in rows}
        return [found.get(i) for i in wanted]

    def fulltext(
        self, queries: Sequence[str], k: int, *, match: Match, ranking: Ranking, normalization: int
    ) -> list[Retrieved]:
        """Return each query's top ``k`` rows by ``ranking`` (ids and scores, best first)."""
        sql, m = _sql(), self.mapping
        tsquery = sql.SQL(_OR_QUERY if match == "or" else "websearch_to_tsquery(%(language)s::regconfig, %(query)s)")
        parts = {
            "id": sql.Identifier(m.id_column),
            "table": _table_sql(m.table),
            "tsquery": tsquery,
            "rank": sql.SQL(ranking),
        }
        if m.tsvector_column:  # a stored column: its GIN index finds the matches
            query = sql.SQL(
                "SELECT {id}::text AS doc_id, {rank}({tsv}, q.q, %(norm)s) AS score FROM {table}, "
                "(SELECT {tsquery}) AS q(q) WHERE {tsv} @@ q.q ORDER BY score DESC, doc_id LIMIT %(k)s"
            ).format(tsv=sql.Identifier(m.tsvector_column), **parts)
        else:  # computed per row, once (OFFSET 0 keeps the planner from computing it again for the rank)
            text = sql.SQL(" || ' ' || ").join(
                sql.SQL("coalesce({}::text, '')").format(sql.Identifier(c)) for c in m.text_columns
            )
            query = sql.SQL(
                "SELECT d.doc_id, {rank}(d.tsv, q.q, %(norm)s) AS score FROM "
                "(SELECT {id}::text AS doc_id, to_tsvector(%(language)s::regconfig, {text}) AS tsv FROM {table} "
                "OFFSET 0) AS d, (SELECT {tsquery}) AS q(q) WHERE d.tsv @@ q.q ORDER BY score DESC, d.doc_id "
                "LIMIT %(k)s"
            ).format(text=text, **parts)
        out = []
        with self.connection() as conn:
            for text_ in queries:
                params = {"language": m.language, "query": text_, "k": int(k), "norm": int(normalization)}
                out.append(Retrieved.of(conn.execute(query, params).fetchall()))
        return out

    def nearest(self, vectors: npt.NDArray[np.float32], k: int) -> list[Retrieved]:
        """Return each vector's top ``k`` rows by cosine similarity, ``1 - (vector <=> query)``."""
        sql, m = _sql(), self.mapping
        assert m.vector_column is not None
        query = sql.SQL(
            "SELECT {id}::text, 1 - ({vec} <=> %(v)s::vector) FROM {table} WHERE {vec} IS NOT NULL "
            "ORDER BY {vec} <=> %(v)s::vector LIMIT %(k)s"
        ).format(id=sql.Identifier(m.id_column), vec=sql.Identifier(m.vector_column), table=_table_sql(m.table))
        out = []
        with self.connection() as conn:
            for v in vectors:
                rows = conn.execute(query, {"v": _vector_text(v), "k": int(k)}).fetchall()
                out.append(Retrieved.of(rows))
        return out


# OR of the query's lexemes, as to_tsvector reads the query (stemmed, stopwords dropped); each
# lexeme is quoted for tsquery's input syntax, so nothing in the query is read as an operator
_OR_QUERY = (
    "(SELECT coalesce(string_agg('''' || replace(replace(l, '\\', '\\\\'), '''', '''''') || '''', ' | '), '')"
    "::tsquery FROM unnest(tsvector_to_array(to_tsvector(%(language)s::regconfig, %(query)s))) AS l)"
)


# ---------------------------------------------------------------------- the first stages


class _PostgresStage:
    """What the three Postgres first stages share: the store, its records, its length, closing it."""

    name = ""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store!r})"

    def __len__(self) -> int:
        return len(self.store)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections."""
        self.store.close()

    def get(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """Return the records of ``ids`` from the table, in order (``None``: no such row)."""
        return self.store.get(ids)


class PostgresFullText(_PostgresStage):
    """Postgres full-text search: the table's ``to_tsvector`` text ranked against the query.

    Args:
        store: the table.
        match: ``"or"`` (a row needs one of the query's words; the default, and much the better on
            natural-language queries) or ``"and"`` (``websearch_to_tsquery``: every word, quoted
            phrases, ``-word`` to exclude).
        ranking: ``"ts_rank"`` (term frequencies; the default) or ``"ts_rank_cd"`` (cover density:
            how close together the query's words are).
        normalization: the rank functions' length normalization flags; the default, 1, divides the
            rank by 1 + log(the document's length).

    The defaults are what measured best on CISI (``bench/postgres_quality.py``): nDCG@10 0.277
    for OR + ``ts_rank`` / 1, 0.189 for OR + ``ts_rank_cd`` / 0, 0.020 for AND.

    Example:
        >>> stage = open_postgres("postgresql://localhost/docs", PostgresTable("docs"))  # doctest: +SKIP
        >>> stage.retrieve(["how are library books classified"], k=10)[0].doc_ids  # doctest: +SKIP
    """

    name = "postgres"

    def __init__(
        self, store: PostgresStore, *, match: Match = "or", ranking: Ranking = "ts_rank", normalization: int = 1
    ) -> None:
        if match not in ("or", "and"):
            raise ConfigError(f"match must be 'or' or 'and' (got {match!r})")
        if ranking not in ("ts_rank", "ts_rank_cd"):
            raise ConfigError(f"ranking must be 'ts_rank' or 'ts_rank_cd' (got {ranking!r})")
        if isinstance(normalization, bool) or not isinstance(normalization, int) or not 0 <= normalization < 64:
            raise ConfigError(
                f"normalization must be Postgres' flags, a whole number in [0, 63] (got {normalization!r})"
            )
        super().__init__(store)
        self.match: Match = match
        self.ranking: Ranking = ranking
        self.normalization = normalization

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` rows (ids and rank scores, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
            ServerUnavailableError: the server went away.
        """
        check_request(queries, k)
        return self.store.fulltext(queries, k, match=self.match, ranking=self.ranking, normalization=self.normalization)


class PostgresVector(_PostgresStage):
    """pgvector similarity: the rows whose vectors are nearest the query's (cosine distance, ``<=>``).

    Args:
        store: the table, with a vector column and pgvector in the database.
        encoder: the dense model embedding queries, or its name (loaded on first use).

    Raises:
        InputError: the database has no pgvector, no vector column was named, or its dimension is
            not the model's.
    """

    name = "postgres-vector"

    def __init__(self, store: PostgresStore, *, encoder: BiEncoder | str = "bge-small-en") -> None:
        store.require_vectors(self.name)
        super().__init__(store)
        self._encoder = encoder

    @property
    def encoder(self) -> BiEncoder:
        """Return the dense model, loading it on first use."""
        if isinstance(self._encoder, str):
            from crossrank.retrieve.embed import BiEncoder

            encoder = BiEncoder(self._encoder)
            dim = self.store.vector_dim()
            if dim is not None and dim != encoder.dim:
                raise InputError(
                    f"column {self.store.mapping.vector_column!r} holds {dim}-dimension vectors and the dense "
                    f"model {encoder.name!r} makes {encoder.dim}: embed the table with the same model"
                )
            self._encoder = encoder
        return self._encoder

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` rows (ids and cosine similarities, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
            ServerUnavailableError: the server went away.
        """
        check_request(queries, k)
        if not queries:
            return []
        return self.store.nearest(self.encoder.encode_queries(list(queries)), k)


class PostgresHybrid(_PostgresStage):
    """Full-text search and pgvector similarity over one table, fused by :class:`Hybrid` (RRF by default).

    Args:
        store: the table, with a vector column and pgvector in the database.
        match, ranking: how full-text search reads the query and ranks rows (see :class:`PostgresFullText`).
        encoder: the dense model, or its name.
        fusion, rrf_k, second_weight, pool: as :class:`Hybrid` takes them (the vector path is the second stage).
    """

    name = "postgres-hybrid"

    def __init__(
        self,
        store: PostgresStore,
        *,
        match: Match = "or",
        ranking: Ranking = "ts_rank",
        encoder: BiEncoder | str = "bge-small-en",
        fusion: Fusion = "rrf",
        rrf_k: int = 60,
        second_weight: float = 0.5,
        pool: int = HYBRID_POOL,
    ) -> None:
        store.require_vectors(self.name)
        super().__init__(store)
        self.fulltext = PostgresFullText(store, match=match, ranking=ranking)
        self.vector = PostgresVector(store, encoder=encoder)
        self.hybrid = Hybrid(
            self.fulltext, self.vector, fusion=fusion, rrf_k=rrf_k, second_weight=second_weight, pool=pool
        )

    def retrieve(self, queries: Sequence[str], k: int) -> list[Retrieved]:
        """Return each query's top ``k`` of the fused lists (ids and fused scores, best first).

        Raises:
            InputError: ``queries`` is one string, or ``k`` < 1.
            ServerUnavailableError: the server went away.
        """
        return self.hybrid.retrieve(queries, k)


PostgresStage = PostgresFullText | PostgresVector | PostgresHybrid


def open_postgres(
    dsn: str,
    mapping: PostgresTable,
    *,
    retriever: str = "postgres",
    match: Match = "or",
    ranking: Ranking = "ts_rank",
    encoder: BiEncoder | str = "bge-small-en",
) -> PostgresStage:
    """Return a first stage (and document store) over an existing Postgres table; it never writes to it.

    Args:
        dsn: a libpq connection string or URI.
        mapping: the table and its columns.
        retriever: ``"postgres"`` (full text), ``"postgres-vector"`` (pgvector) or ``"postgres-hybrid"`` (both, RRF).
        match: how full-text search reads the query: ``"or"`` (default) or ``"and"``.
        ranking: ``"ts_rank"`` (default) or ``"ts_rank_cd"`` (see :class:`PostgresFullText`).
        encoder: the dense model of the vector path, or its name.

    Raises:
        ConfigError: an unknown ``retriever`` or ``match``, or a malformed ``dsn``.
        ServerUnavailableError: the server cannot be reached.
        InputError: the table, a column, the SELECT permission or (for the vector paths) pgvector is missing.

    Example:
        >>> docs = PostgresTable("docs", id_column="id", text_columns=("title", "body"))
        >>> stage = open_postgres("postgresql://me@localhost/shop", docs)  # doctest: +SKIP
        >>> Pipeline(stage, reranker="default").search("waterproof boots", k=10)  # doctest: +SKIP
    """
    if retriever not in POSTGRES_RETRIEVERS:
        raise ConfigError(f"retriever must be one of {', '.join(POSTGRES_RETRIEVERS)} (got {retriever!r})")
    if match not in ("or", "and"):
        raise ConfigError(f"match must be 'or' or 'and' (got {match!r})")
    store = PostgresStore(dsn, mapping)
    try:
        if retriever == "postgres":
            return PostgresFullText(store, match=match, ranking=ranking)
        if retriever == "postgres-vector":
            return PostgresVector(store, encoder=encoder)
        return PostgresHybrid(store, match=match, ranking=ranking, encoder=encoder)
    except BaseException:
        store.close()
        raise


# ---------------------------------------------------------------------- building a table (the one writer)


def build_postgres_table(
    dsn: str,
    corpus: str | os.PathLike[str],
    table: str,
    *,
    vectors: bool = False,
    encoder: BiEncoder | str = "bge-small-en",
    language: str = "english",
    overwrite: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> PostgresTable:
    """Create ``table`` from a corpus and return the mapping that searches it.

    The table holds ``id`` (primary key), ``title``, ``text``, a generated ``tsv`` column
    (``to_tsvector(language, title || ' ' || text)``) with a GIN index, and, with ``vectors``, an
    ``embedding vector(dim)`` column of the dense model's document vectors with an HNSW index
    (cosine). It is written in one transaction: a failed build leaves nothing behind.

    Args:
        dsn: a libpq connection string or URI.
        corpus: a BEIR folder or a JSONL file.
        table: the table to create, ``name`` or ``schema.name``.
        vectors: also store vectors (needs pgvector: ``CREATE EXTENSION vector`` is run when the server has it).
        encoder: the dense model, or its name.
        language: the text search configuration.
        overwrite: replace a table of that name.
        on_batch: called with the number of documents after each batch is written.

    Raises:
        InputError: the table exists (without ``overwrite``), a bad record, or no pgvector on the server.
        ServerUnavailableError: the server cannot be reached.
    """
    from crossrank.retrieve.corpus import read_corpus

    psycopg, sql = _psycopg(), _sql()
    mapping = PostgresTable(
        table,
        id_column="id",
        text_columns=("title", "text"),
        vector_column="embedding" if vectors else None,
        tsvector_column="tsv",
        language=language,
    )
    params = _conninfo(dsn)
    where = _where(params)
    conn = _connect(params, where)
    target = _table_sql(table)
    try:
        with conn.transaction():
            qualified = target.as_string(conn)
            exists = conn.execute("SELECT to_regclass(%s)", (qualified,)).fetchone()[0] is not None
            if exists and not overwrite:
                raise InputError(f"table {table!r} already exists in {where}; pick another --table or add --overwrite")
            enc: BiEncoder | None = None
            if vectors:
                if not _has_vector(conn):
                    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
                    if available is None:
                        raise InputError(
                            f"vectors need pgvector, and the extension is missing in {where} (the server does not "
                            "have it): install pgvector there and run CREATE EXTENSION vector, or build with "
                            "--retriever bm25"
                        )
                    conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                enc = _load_encoder(encoder)
            if exists:
                conn.execute(sql.SQL("DROP TABLE {}").format(target))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {t} (id text PRIMARY KEY, title text NOT NULL DEFAULT '', text text NOT NULL, "
                    "tsv tsvector GENERATED ALWAYS AS (to_tsvector({lang}::regconfig, title || ' ' || text)) STORED"
                    "{vec})"
                ).format(
                    t=target,
                    lang=sql.Literal(language),
                    vec=sql.SQL(f", embedding vector({enc.dim})") if enc is not None else sql.SQL(""),
                )
            )
            cols = ["id", "title", "text"] + (["embedding"] if enc is not None else [])
            copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
                target, sql.SQL(", ").join(sql.Identifier(c) for c in cols)
            )
            batch: list[Any] = []
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for doc in read_corpus(corpus):
                    batch.append(doc)
                    if len(batch) >= 256:
                        _copy_batch(copy, batch, enc, on_batch)
                        batch = []
                _copy_batch(copy, batch, enc, on_batch)
            conn.execute(sql.SQL("CREATE INDEX ON {} USING gin (tsv)").format(target))
            if enc is not None:
                conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(target))
            conn.execute(sql.SQL("ANALYZE {}").format(target))
    except psycopg.Error as err:
        raise _translate(err, None, where=where, table=table) from err
    finally:
        conn.close()
    return mapping


def _copy_batch(copy: Any, docs: list[Any], enc: BiEncoder | None, on_batch: Callable[[int], None] | None) -> None:
    if not docs:
        return
    vecs = enc.encode_documents([d.content for d in docs]) if enc is not None else None
    for i, doc in enumerate(docs):
        row = [doc.id, doc.title, doc.text]
        if vecs is not None:
            row.append(_vector_text(vecs[i]))
        copy.write_row(row)
    if on_batch is not None:
        on_batch(len(docs))


def _load_encoder(encoder: BiEncoder | str) -> BiEncoder:
    if isinstance(encoder, str):
        from crossrank.retrieve.embed import BiEncoder

        return BiEncoder(encoder)
    return encoder


# ---------------------------------------------------------------------- helpers


def _sql() -> Any:
    _psycopg()
    import psycopg.sql

    return psycopg.sql


def _table_sql(table: str) -> Any:
    """Return the table's name as SQL: ``schema.name`` is two identifiers, each quoted as written."""
    sql = _sql()
    return sql.Identifier(*table.split(".", 1)) if "." in table else sql.Identifier(table)


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _record(doc_id: str, texts: Sequence[Any]) -> dict[str, Any]:
    values = ["" if t is None else str(t) for t in texts]
    if len(values) == 1:
        return {"id": doc_id, "title": "", "text": values[0]}
    return {"id": doc_id, "title": values[0], "text": " ".join(v for v in values[1:] if v)}


def _vector_text(v: npt.NDArray[np.float32]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in np.asarray(v, dtype=np.float32).tolist()) + "]"


def _read_only(conn: Any) -> None:
    conn.read_only = True  # every transaction on a pooled connection is BEGIN READ ONLY


def _conninfo(dsn: str) -> dict[str, Any]:
    """Return the DSN's parameters, with a connect timeout unless it sets one."""
    psycopg = _psycopg()
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError("--dsn must be a Postgres connection string such as postgresql://user@host:5432/dbname")
    try:
        params: dict[str, Any] = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as err:
        raise ConfigError(
            f"--dsn is not a Postgres connection string ({_first_line(err)}); write it as "
            "postgresql://user@host:5432/dbname or 'host=... port=... dbname=... user=...'"
        ) from err
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "crossrank")
    return params


def _where(params: dict[str, Any]) -> str:
    """Return where a DSN points, for messages: ``database 'db' at host:port as user`` (never the password)."""
    host = params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER")
    db = params.get("dbname") or os.environ.get("PGDATABASE") or user or "(default)"
    return f"database {db!r} at {host}:{port}" + (f" as {user!r}" if user else "")


def _connect(params: dict[str, Any], where: str) -> Any:
    psycopg = _psycopg()
    try:
        return psycopg.connect(**params)
    except psycopg.OperationalError as err:
        raise ServerUnavailableError(
            f"cannot connect to Postgres ({where}): {_first_line(err)}; check --dsn (host, port, dbname, user, "
            "password) and that the server is running"
        ) from err


def _has_vector(conn: Any) -> bool:
    return conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is not None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _translate(err: Exception, store: PostgresStore | None, *, where: str = "", table: str = "") -> Exception:
    """Return crossrank's error for a psycopg error raised while reading (or building) a table."""
    psycopg = _psycopg()
    errors = psycopg.errors
    where = store.where if store is not None else where
    table = store.mapping.table if store is not None else table
    detail = _first_line(err)
    if isinstance(err, errors.InsufficientPrivilege):
        return InputError(
            f"permission denied in {where} ({detail}); as the table's owner run: GRANT SELECT ON {table} TO <user>"
        )
    if isinstance(err, errors.UndefinedTable):
        return InputError(f"table {table!r} is missing in {where} ({detail}); check --table")
    if isinstance(err, errors.UndefinedColumn):
        cols = f" (its columns: {', '.join(store.columns)})" if store is not None else ""
        return InputError(f"a column is missing in {table!r}: {detail}{cols}; check the column options")
    if isinstance(err, errors.UndefinedObject) and "vector" in detail:
        return InputError(f"the extension is missing in {where} ({detail}): run CREATE EXTENSION vector")
    if isinstance(err, errors.ReadOnlySqlTransaction):
        return InputError(
            f"crossrank reads the table and never writes it, and a write was refused in {where}: {detail}"
        )
    if isinstance(err, psycopg.OperationalError | psycopg.InterfaceError):
        return ServerUnavailableError(
            f"the Postgres server ({where}) went away mid-query: {detail}; check that it is running, then retry"
        )
    return InputError(f"Postgres refused a query in {where}: {detail}")

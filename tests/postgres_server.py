"""A throwaway PostgreSQL server for tests: Debian's binaries (``postgresql``), a temp dir, a free port.

Root cannot run ``initdb``, so as root the server runs as the ``postgres`` user (in /tmp, which
that user can reach). Missing binaries, user or driver fail the test in CI (``parts.need``).
``tests/hub/conftest.py`` (one server per session, a fresh database per test) and
``tests/scale/replicas.py`` (hub replicas on one database) use it::

    with PostgresServer() as pg:
        url = pg.fresh_database()   # postgresql+psycopg://postgres@127.0.0.1:PORT/hub_...
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from parts import free_port, need

__all__ = ["PostgresServer"]

_databases = itertools.count()


class PostgresServer:
    """A throwaway PostgreSQL server on a free port; :meth:`fresh_database` makes an empty database URL."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        need(bool(found), "PostgreSQL (Debian package 'postgresql': /usr/lib/postgresql/*/bin/initdb)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            need(False, "the psycopg driver (pip install 'edgeship[hub]')")
        self.bindir = Path(found[-1]).parent
        self.prefix: list[str] = []
        self.base = Path(tempfile.mkdtemp(prefix="edgeship-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.base, ignore_errors=True)
                need(False, "the 'postgres' user (Debian package 'postgresql')")
                raise
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.prefix = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}"

    def start(self) -> PostgresServer:
        data = self.base / "data"
        subprocess.run([*self.prefix, str(self.bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=60)
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c full_page_writes=off -c max_connections=200")
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l",
                        str(self.base / "log"), "-w", "start"], check=True, capture_output=True, timeout=60)
        return self

    def fresh_database(self) -> str:
        import psycopg

        name = f"hub_{os.getpid()}_{next(_databases)}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate",
                        "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None) -> None:
        self.stop()

"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, started on
127.0.0.1 and a free port, stopped (``pg_ctl stop -m immediate``) and removed at the end.

PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user
(or ``nobody``), in a folder that user owns. :func:`start` raises :class:`Unavailable`,
with the reason, where no server can be started (no binaries, no psycopg, initdb or the
start failed within its time); the fixture skips saying so.

``ESP_TEST_POSTGRES_URL`` (a ``postgresql://`` URL of a server where the user may create
databases) makes the tests use that server instead of starting one.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

START_TIMEOUT = 30  # seconds for pg_ctl start -w (and initdb, each)


class Unavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


def _bindir() -> Path:
    """The folder of initdb/pg_ctl: ``ESP_PG_BIN``, Debian's newest, or the PATH's."""
    env = os.environ.get("ESP_PG_BIN")
    candidates = [env] if env else sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                          key=lambda p: int(p.split("/")[-2]), reverse=True)
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(on_path))
    for c in candidates:
        if c and os.path.exists(os.path.join(c, "initdb")) and os.path.exists(
                os.path.join(c, "pg_ctl")):
            return Path(c)
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's "
                      "'postgresql' or set ESP_PG_BIN")


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as under root; None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise Unavailable("running as root and no 'postgres' or 'nobody' user to run the "
                      "server as (PostgreSQL refuses root)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server: its base URL (no database), folder and binaries."""

    bindir: Path
    folder: Path
    port: int
    user: pwd.struct_passwd | None
    _count: int = field(default=0)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://esp@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, timeout: float = START_TIMEOUT + 30) -> subprocess.CompletedProcess:
        """Run a server binary as the server's user."""
        kw = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              cwd=str(self.folder), check=False, **kw)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        self._count += 1
        name = f"esp_test_{os.getpid()}_{self._count}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once (it holds only test data) and remove its folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-t",
                         str(START_TIMEOUT), "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def log_tail(self, n: int = 15) -> str:
        try:
            lines = (self.folder / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return " | ".join(lines[-n:])


class External:
    """A server given by ``ESP_TEST_POSTGRES_URL``: databases are made on it, it is not
    stopped (the databases made are dropped)."""

    def __init__(self, url: str) -> None:
        self.base = url
        self._made: list[str] = []

    def url(self, database: str = "postgres") -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.base)
        return urlunsplit(parts._replace(path="/" + database))

    def new_database(self) -> str:
        import psycopg

        name = f"esp_test_{os.getpid()}_{len(self._made) + 1}"
        with psycopg.connect(self.base, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._made.append(name)
        return self.url(name)

    def stop(self) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True, connect_timeout=10) as conn:
            for name in self._made:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def connect_or_start() -> Server | External:
    """``ESP_TEST_POSTGRES_URL``'s server if set, else a new one (:func:`start`)."""
    url = os.environ.get("ESP_TEST_POSTGRES_URL")
    if not url:
        return start()
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=10):
            pass
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - any failure to connect is the reason to skip
        raise Unavailable(f"ESP_TEST_POSTGRES_URL cannot be reached: {exc}") from None
    return External(url)


def start() -> Server:
    """initdb and start a server; :class:`Unavailable` (with the reason) if none can run.

    The caller must :meth:`Server.stop` it; a failed start stops and removes what it made.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"psycopg is not installed ({exc}): pip install "
                          "'earlystop_predict[postgres]'") from None
    bindir, user = _bindir(), _server_user()
    for attempt in range(3):  # the free port may be taken before the server binds it
        folder = Path(tempfile.mkdtemp(prefix="esp-pg-"))  # under /tmp: the user reaches it
        server = Server(bindir, folder, _free_port(), user)
        try:
            if user is not None:
                os.chown(folder, user.pw_uid, user.pw_gid)
            _init_and_start(server)
            return server
        except Unavailable as exc:
            server.stop()
            if attempt == 2 or "in use" not in str(exc):
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")  # pragma: no cover


def _init_and_start(server: Server) -> None:
    try:
        res = server.run("initdb", "-D", str(server.data), "-U", "esp", "-A", "trust",
                         "-E", "UTF8", "--no-sync", "--no-instructions",
                         timeout=START_TIMEOUT * 2)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"initdb took over {START_TIMEOUT * 2} s") from None
    if res.returncode != 0:
        raise Unavailable(f"initdb failed ({res.returncode}): {res.stderr.strip()[-400:]}")
    options = (f"-h 127.0.0.1 -p {server.port} -c unix_socket_directories='' "
               "-c fsync=off -c full_page_writes=off -c max_connections=60")
    try:
        res = server.run("pg_ctl", "-D", str(server.data), "-l", str(server.folder /
                         "server.log"), "-o", options, "-w", "-t", str(START_TIMEOUT), "start")
    except subprocess.TimeoutExpired:
        raise Unavailable(f"pg_ctl start took over {START_TIMEOUT + 30} s: "
                          f"{server.log_tail()}") from None
    if res.returncode != 0:
        raise Unavailable(f"the server did not start (pg_ctl -t {START_TIMEOUT}: "
                          f"{res.stderr.strip()[-200:]}): {server.log_tail()}")

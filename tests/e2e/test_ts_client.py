"""The TypeScript client's own tests (node's test runner, clients/ts/test) against a real stack.

`npm test` gets the servers' addresses and a bearer token in its environment, and a small HTTP
endpoint on which it asks for the query server to be killed and started again (the WatchOrders
resume test). The kills and starts run on this, the main, thread: a role dies with the thread that
spawned it."""

from __future__ import annotations

import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import grpc
import pytest

from tests.certs import Authority
from tests.harness import ROOT, Stack, serving, token, wait_until

pytestmark = pytest.mark.e2e

TS = ROOT / "clients" / "ts"
TS_TESTS = 14  # in clients/ts/test: a test that stopped running would go unnoticed otherwise
Request = tuple[str, "queue.Queue[str]"]


class Control:
    """Requests from the node tests, handed to the main thread; each waits for its answer."""

    def __init__(self) -> None:
        self.requests: queue.Queue[Request] = queue.Queue()
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                answer: queue.Queue[str] = queue.Queue()
                control.requests.put((self.path.strip("/"), answer))
                body = answer.get(timeout=120).encode()
                self.send_response(200 if body == b"ok" else 500)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def control() -> Iterator[Control]:
    running = Control()
    yield running
    running.close()


@pytest.fixture(scope="module")
def mtls(database_url: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A second command server on the same database that requires a client certificate from a
    throwaway CA; what the node tests need to reach it."""
    folder = tmp_path_factory.mktemp("certs")
    ca = Authority.create(folder, "orders-test-ca")
    server, client = ca.issue(folder, "server", server=True), ca.issue(folder, "client")
    env = dict(ORDERS_TLS_CERT=str(server.cert), ORDERS_TLS_KEY=str(server.key), ORDERS_TLS_CLIENT_CA=str(ca.cert))
    credentials = grpc.ssl_channel_credentials(ca.cert.read_bytes(), client.key.read_bytes(), client.cert.read_bytes())
    stack = Stack(database_url, nats_url, tmp_path_factory.mktemp("mtls-logs"), extra_env=env)
    stack.start("command-server")
    wait_until(lambda: stack.alive() and serving(stack.command_addr, credentials), what="the TLS command server SERVING")
    yield {"ORDERS_TLS_COMMAND_ADDR": stack.command_addr, "ORDERS_TLS_CA": str(ca.cert),
           "ORDERS_TLS_CLIENT_CERT": str(client.cert), "ORDERS_TLS_CLIENT_KEY": str(client.key)}
    stack.stop_all()


def actions(stack: Stack) -> dict[str, Callable[[], None]]:
    def kill() -> None:
        stack.kill("query-server")

    def start() -> None:
        stack.start("query-server")  # on the same QUERY_ADDR
        wait_until(lambda: stack.alive() and serving(stack.query_addr), what="query-server SERVING again")

    return {"query-server/kill": kill, "query-server/start": start}


def run_npm_test(stack: Stack, control: Control, log: Path, extra: dict[str, str]) -> int:
    env = {**stack.env(), **extra, "ORDERS_COMMAND_ADDR": stack.command_addr, "ORDERS_QUERY_ADDR": stack.query_addr,
           "ORDERS_TOKEN": token(), "ORDERS_TEST_CONTROL_URL": control.url}
    npm = shutil.which("npm")
    assert npm, "npm is needed for the TypeScript client's tests"
    handlers = actions(stack)
    with log.open("wb") as out:
        proc = subprocess.Popen([npm, "test"], cwd=TS, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                try:
                    action, answer = control.requests.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    handlers[action]()
                    answer.put("ok")
                except Exception as error:  # told to the node test, which fails with it
                    answer.put(f"{action}: {error!r}")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode


def test_the_typescript_client_suite_passes_against_the_stack(stack: Stack, control: Control, mtls: dict[str, str],
                                                              tmp_path: Path) -> None:
    log = tmp_path / "npm-test.log"
    code = run_npm_test(stack, control, log, mtls)
    output = log.read_text(errors="replace")
    assert code == 0, output[-6000:]
    # node's runner: every test ran and passed (two files: retries, and the stack), none skipped.
    summary = dict(re.findall(r"^# (pass|fail|cancelled|skipped|todo) (\d+)$", output, re.MULTILINE))
    assert summary == {"pass": str(TS_TESTS), "fail": "0", "cancelled": "0", "skipped": "0", "todo": "0"}, output[-3000:]

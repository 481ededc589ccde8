"""`orders up` (what `make run` runs) on a fresh data folder, driven with the real grpcurl."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from server.platform.process import free_port
from tests.harness import GRPCURL, ROOT, wait_until

ROLES = {"orders_command", "orders_query", "orders_projector", "orders_relay", "orders_saga"}

pytestmark = pytest.mark.e2e
Up = tuple[str, str, subprocess.Popen[str], Path]  # command and query addresses, the process, its data folder


@pytest.fixture(scope="module")
def orders_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    data = tmp_path_factory.mktemp("up")
    command_addr, query_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env.update(ORDERS_DATA_DIR=str(data), COMMAND_ADDR=command_addr, QUERY_ADDR=query_addr,
               ORDERS_METRICS_BASE_PORT="0")
    out = (data / "out.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server", "up"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
    )
    wait_until(lambda: "Orders is up." in (data / "out.log").read_text(), timeout=120, what="the banner")
    yield command_addr, query_addr, proc, data
    if proc.poll() is None:
        proc.kill()


def run_grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, "-plaintext", "-max-time", "10", *args], capture_output=True, text=True)


def grpcurl(*args: str) -> str:
    result = run_grpcurl(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def as_banner_token(data: Path) -> tuple[str, str]:
    """grpcurl's option carrying the token of the banner's `export ORDERS_TOKEN=` line."""
    lines = (data / "out.log").read_text().splitlines()
    token = next(line.split("=", 1)[1] for line in lines if line.strip().startswith("export ORDERS_TOKEN="))
    return ("-rpc-header", f"authorization: Bearer {token}")


def test_grpcurl_lists_each_service_and_both_report_serving(orders_up: Up) -> None:
    command_addr, query_addr, _, _ = orders_up

    assert "orders.v1.CommandService" in grpcurl(command_addr, "list").split()
    assert "orders.v1.QueryService" in grpcurl(query_addr, "list").split()
    for addr in (command_addr, query_addr):
        assert json.loads(grpcurl(addr, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}


def test_grpcurl_places_an_order_and_watches_the_saga_confirm_it_holding_credit_and_stock(orders_up: Up) -> None:
    """The README's walk-through: a customer with credit, a product in stock, an order placed;
    WatchOrders shows it PLACED, then CONFIRMED by the saga; the reads show the reservations."""
    command_addr, query_addr, _, data = orders_up
    signed_in = as_banner_token(data)
    grpcurl(*signed_in, "-d", json.dumps({"request_id": "r-1", "customer_id": "c-1", "display_name": "Ada",
                                          "email": "ada@example.com",
                                          "credit_limit": {"currency_code": "EUR", "units": "100"}}),
            command_addr, "orders.v1.CommandService/RegisterCustomer")
    grpcurl(*signed_in, "-d", json.dumps({"request_id": "r-5", "product_id": "p-1", "expected_version": "0",
                                          "quantity": "10"}),
            command_addr, "orders.v1.CommandService/AddStock")
    watch = subprocess.Popen([GRPCURL, "-plaintext", "-max-time", "60", *signed_in, "-d", '{"customer_id":"c-1"}',
                              query_addr, "orders.v1.QueryService/WatchOrders"], stdout=subprocess.PIPE, text=True)
    line = {"product_id": "p-1", "quantity": "3", "unit_price": {"currency_code": "EUR", "units": "9", "nanos": 990000000}}
    try:
        placed = json.loads(grpcurl(*signed_in, "-d", json.dumps({"request_id": "r-2", "order_id": "o-1",
                                                                   "customer_id": "c-1", "lines": [line]}),
                                    command_addr, "orders.v1.CommandService/PlaceOrder"))
        states = watched_states(watch, "o-1", until="ORDER_STATE_CONFIRMED")
    finally:
        watch.kill()
        watch.wait()

    assert placed["version"] == "1"
    assert states == ["ORDER_STATE_PLACED", "ORDER_STATE_CONFIRMED"]
    summary = json.loads(grpcurl(*signed_in, "-d", '{"order_id":"o-1"}', query_addr,
                                 "orders.v1.QueryService/GetOrderSummary"))["summary"]
    assert summary["total"] == {"currency_code": "EUR", "units": "29", "nanos": 970000000}
    assert summary["saga_state"] == "SAGA_STATE_CONFIRMED"
    customer = wait_until(lambda: (c := json.loads(grpcurl(*signed_in, "-d", '{"customer_id":"c-1"}', query_addr,
                                                           "orders.v1.QueryService/GetCustomer"))["customer"])
                          .get("credit_reserved", {}).get("units") == "29" and c, what="the credit reservation read")
    assert customer["credit_available"] == {"currency_code": "EUR", "units": "70", "nanos": 30000000}
    product = json.loads(grpcurl(*signed_in, "-d", '{"product_id":"p-1"}', query_addr,
                                 "orders.v1.QueryService/GetProduct"))["product"]
    assert (product["on_hand"], product["reserved"], product["available"]) == ("10", "3", "7")


def watched_states(watch: subprocess.Popen[str], order_id: str, until: str) -> list[str]:
    """The states grpcurl prints for `order_id` on a WatchOrders stream, up to `until`."""
    assert watch.stdout is not None
    states: list[str] = []
    message = ""
    for text in watch.stdout:
        message += text
        if text.rstrip() != "}":
            continue
        update = json.loads(message).get("update", {}).get("summary", {})
        message = ""
        if update.get("order_id") == order_id:
            states.append(update["state"])
            if update["state"] == until:
                break
    return states


def test_a_call_without_the_token_is_unauthenticated_and_orders_token_mints_narrower_ones(orders_up: Up) -> None:
    command_addr, query_addr, _, data = orders_up
    anonymous = run_grpcurl("-d", json.dumps({"order_id": "o-1"}), query_addr, "orders.v1.QueryService/GetOrderSummary")
    minted = subprocess.run([sys.executable, "-m", "server", "token", "--tenant", "default", "--scope", "orders.read"],
                            cwd=ROOT, env=dict(os.environ, ORDERS_DATA_DIR=str(data)),
                            capture_output=True, text=True, check=True)
    reader = ("-rpc-header", f"authorization: Bearer {minted.stdout.strip()}")
    read = run_grpcurl(*reader, "-d", json.dumps({"order_id": "o-404"}), query_addr,
                       "orders.v1.QueryService/GetOrderSummary")
    write = run_grpcurl(*reader, "-d", json.dumps({"request_id": "r-9", "customer_id": "c-9", "display_name": "Bo",
                                                   "email": "bo@example.com"}),
                        command_addr, "orders.v1.CommandService/RegisterCustomer")

    assert "Code: Unauthenticated" in anonymous.stderr and "TOKEN_MISSING" in anonymous.stderr
    assert "Code: NotFound" in read.stderr  # signed in, and allowed to read
    assert "Code: PermissionDenied" in write.stderr and "SCOPE_MISSING" in write.stderr


def test_each_role_logs_in_as_itself_and_the_banner_shows_no_password_beside_the_addresses(orders_up: Up) -> None:
    _, _, _, data = orders_up
    banner = (data / "out.log").read_text()
    owner = next(line.split("'")[1] for line in banner.splitlines() if "export DATABASE_URL=" in line)

    with psycopg.connect(owner, autocommit=True) as db:
        def connected() -> set[str]:
            return {str(r[0]) for r in db.execute("SELECT usename FROM pg_stat_activity WHERE datname = 'orders'")}

        wait_until(lambda: connected() >= ROLES, what="every role connected as its own database role")
    postgres_line = next(line for line in banner.splitlines() if line.strip().startswith("PostgreSQL"))

    assert (data / "postgres.password").read_text().strip() not in postgres_line
    assert (data / "postgres.password").stat().st_mode & 0o077 == 0


def test_sigterm_stops_every_child_and_leaves_no_process_behind(orders_up: Up) -> None:
    _, _, proc, _ = orders_up
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert len(descendants) >= 7  # five roles, postgres, nats-server

    proc.send_signal(signal.SIGTERM)

    assert proc.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert alive == []


def up(tmp_path: Path, **settings: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`orders up` on embedded servers and free ports (`settings` add to or replace them), its
    output in tmp_path/out.log; the process, and its environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env.update(ORDERS_DATA_DIR=str(tmp_path), COMMAND_ADDR=f"127.0.0.1:{free_port()}",
               QUERY_ADDR=f"127.0.0.1:{free_port()}", ORDERS_METRICS_BASE_PORT="0", **settings)
    with (tmp_path / "out.log").open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "up"], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    return proc, env


def processes(up_proc: subprocess.Popen[str], role: str) -> list[psutil.Process]:
    """The running processes of `role` that `orders up` started."""
    return [p for p in psutil.Process(up_proc.pid).children(recursive=True) if p.cmdline()[-2:] == ["server", role]]


def two_on_one_port(up_proc: subprocess.Popen[str], role: str, addr: str) -> tuple[psutil.Process, psutil.Process]:
    """The two processes of `role` that `orders up` runs on `addr`, once both listen on its port."""
    first, second = wait_until(lambda: s if len(s := processes(up_proc, role)) == 2 else None, what=f"two {role}s")
    port = int(addr.rsplit(":", 1)[1])
    wait_until(lambda: all(any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections())
                           for p in (first, second)), what="both listening on the one port")
    return first, second


def one_killed_the_port_answers(up_proc: subprocess.Popen[str], role: str, addr: str, victim: psutil.Process) -> None:
    """The other keeps the port open and answering while the supervisor restarts the killed one."""
    victim.kill()
    victim.wait(timeout=10)
    assert json.loads(grpcurl(addr, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}
    wait_until(lambda: len(processes(up_proc, role)) == 2, what=f"the killed {role} restarted")


def stopped(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_orders_roles_starts_only_the_roles_it_names(tmp_path: Path) -> None:
    proc, env = up(tmp_path, ORDERS_ROLES="command-server")
    command_addr = env["COMMAND_ADDR"]
    try:
        wait_until(lambda: "Orders is up." in (tmp_path / "out.log").read_text(), timeout=120, what="the banner")
        roles = [" ".join(p.cmdline()[-2:]) for p in psutil.Process(proc.pid).children(recursive=True)
                 if "-m" in p.cmdline() and "server" in p.cmdline()]

        assert roles == ["server command-server"]
        assert "roles           command-server (ORDERS_ROLES)" in (tmp_path / "out.log").read_text()
        assert json.loads(grpcurl(command_addr, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}
    finally:
        stopped(proc)


def test_orders_command_servers_runs_that_many_command_servers_on_one_port(tmp_path: Path) -> None:
    proc, env = up(tmp_path, ORDERS_ROLES="command-server", ORDERS_COMMAND_SERVERS="2")
    command_addr = env["COMMAND_ADDR"]
    try:
        wait_until(lambda: "Orders is up." in (tmp_path / "out.log").read_text(), timeout=120, what="the banner")
        assert f"CommandService  {command_addr}  (plaintext, 2 processes)" in (tmp_path / "out.log").read_text()
        first, _ = two_on_one_port(proc, "command-server", command_addr)
        one_killed_the_port_answers(proc, "command-server", command_addr, first)
    finally:
        stopped(proc)


def test_orders_query_servers_run_on_one_port_and_read_the_embedded_replica(tmp_path: Path) -> None:
    proc, env = up(tmp_path, ORDERS_ROLES="query-server", ORDERS_QUERY_SERVERS="2", ORDERS_PG_REPLICA="1")
    query_addr = env["QUERY_ADDR"]
    try:
        wait_until(lambda: "Orders is up." in (tmp_path / "out.log").read_text(), timeout=120, what="the banner")
        banner = (tmp_path / "out.log").read_text()
        assert f"QueryService    {query_addr}  (plaintext, 2 processes)" in banner
        replica_line = next(line for line in banner.splitlines() if line.strip().startswith("PG replica"))
        first, second = two_on_one_port(proc, "query-server", query_addr)
        replica_port = replica_line.split()[2].rsplit(":", 1)[1].split("/")[0]
        assert all(f"@127.0.0.1:{replica_port}/" in p.environ()["QUERY_DATABASE_URL"] for p in (first, second))
        password = (tmp_path / "postgres.password").read_text().strip()
        with psycopg.connect(f"postgresql://postgres:{password}@127.0.0.1:{replica_port}/orders") as replica:
            assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)

        one_killed_the_port_answers(proc, "query-server", query_addr, first)
    finally:
        stopped(proc)


def test_orders_projectors_runs_that_many_projectors_sharing_the_partitions(tmp_path: Path) -> None:
    proc, env = up(tmp_path, ORDERS_ROLES="projector", ORDERS_PROJECTORS="2")

    def owners() -> Counter[str]:
        """How many partitions each owner holds, as `orders status` tells."""
        line = next(x for x in (tmp_path / "out.log").read_text().splitlines() if "export DATABASE_URL=" in x)
        urls = dict(part.split("=", 1) for part in line.split()[1:])
        status = subprocess.run([sys.executable, "-m", "server", "status", "--json"], cwd=ROOT, capture_output=True,
                                text=True, env=dict(env, **{k: v.strip("'") for k, v in urls.items()}))
        return Counter(p["owner"] for p in json.loads(status.stdout)["partitions"]) if status.returncode == 0 else Counter()

    try:
        wait_until(lambda: "Orders is up." in (tmp_path / "out.log").read_text(), timeout=120, what="the banner")
        projectors = {p.pid for p in processes(proc, "projector")}
        assert len(projectors) == 2
        # An owner is named by its session (host:pid); a lock read in the instant its session
        # is not listed shows the bare backend pid: wait for both names.
        shared = wait_until(lambda: c if sorted((c := owners()).values()) == [8, 8] and all(":" in n for n in c)
                            else None, timeout=60, what="the two projectors holding 8 partitions each")
        assert {str(name).rsplit(":", 1)[1] for name in shared} == {str(pid) for pid in projectors}
    finally:
        stopped(proc)

"""`orders up` with mutual TLS: its probes present the probe certificate, and the grpcurl lines of
its banner (certificates and dev token) work as printed. Without a probe certificate it refuses
to start, at once."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from server.platform.process import free_port
from tests.certs import Authority, Issued
from tests.harness import GRPCURL, ROOT, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def tls_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("certs")
    ca = Authority.create(folder, "orders-dev-ca")
    server, probe = ca.issue(folder, "server", server=True), ca.issue(folder, "probe")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env.update(ORDERS_TLS_CERT=str(server.cert), ORDERS_TLS_KEY=str(server.key), ORDERS_TLS_CLIENT_CA=str(ca.cert),
               ORDERS_METRICS_BASE_PORT="0", COMMAND_ADDR=f"127.0.0.1:{free_port()}",
               QUERY_ADDR=f"127.0.0.1:{free_port()}")
    return env | _probe(probe)


def _probe(probe: Issued) -> dict[str, str]:
    return {"ORDERS_TLS_PROBE_CERT": str(probe.cert), "ORDERS_TLS_PROBE_KEY": str(probe.key)}


@pytest.fixture(scope="module")
def banner(tls_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("up")
    out_path = data / "out.log"
    with out_path.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "server", "up"], cwd=ROOT, env=tls_env | {"ORDERS_DATA_DIR": str(data)},
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: proc.poll() is None and "Orders is up." in out_path.read_text(), timeout=120,
                   what="the banner (probes over mutual TLS)")
        yield out_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def _banner_line(banner: str, ending: str) -> list[str]:
    """The banner's grpcurl line ending in `ending`, as a shell would run it after the banner's
    `export ORDERS_TOKEN=...`."""
    token = next(line.split("=", 1)[1] for line in banner.splitlines() if line.strip().startswith("export ORDERS_TOKEN="))
    line = next(line.strip() for line in banner.splitlines() if line.strip().startswith("grpcurl ")
                and line.rstrip().endswith(ending))
    words = shlex.split(line.replace("$ORDERS_TOKEN", token))
    return [GRPCURL, "-max-time", "10", *words[1:]]


def test_the_banner_says_mutual_tls_and_its_grpcurl_lines_carry_the_certificates(banner: str, tls_env: dict[str, str]) -> None:
    assert f"CommandService  {tls_env['COMMAND_ADDR']}  (mutual TLS)" in banner
    line = _banner_line(banner, "list")

    assert "-plaintext" not in line
    assert line[line.index("-cacert") + 1] == tls_env["ORDERS_TLS_CERT"]
    assert (line[line.index("-cert") + 1], line[line.index("-key") + 1]) == (
        tls_env["ORDERS_TLS_PROBE_CERT"], tls_env["ORDERS_TLS_PROBE_KEY"])


def test_the_banner_grpcurl_lines_work_as_printed(banner: str) -> None:
    listed = subprocess.run(_banner_line(banner, "list"), capture_output=True, text=True, timeout=60)
    checked = subprocess.run(_banner_line(banner, "grpc.health.v1.Health/Check"), capture_output=True, text=True,
                             timeout=60)

    registered = subprocess.run(_banner_line(banner, "orders.v1.CommandService/RegisterCustomer"),
                                capture_output=True, text=True, timeout=60)

    assert listed.returncode == 0 and "orders.v1.CommandService" in listed.stdout.split(), listed.stderr
    assert checked.returncode == 0 and json.loads(checked.stdout) == {"status": "SERVING"}, checked.stderr
    assert registered.returncode == 0 and json.loads(registered.stdout)["version"] == "1", registered.stderr


def test_orders_up_under_mutual_tls_without_a_probe_certificate_refuses_to_start(
    tls_env: dict[str, str], tmp_path: Path,
) -> None:
    env = {k: v for k, v in tls_env.items() if not k.startswith("ORDERS_TLS_PROBE_")}

    result = subprocess.run([sys.executable, "-m", "server", "up"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env=env | {"ORDERS_DATA_DIR": str(tmp_path)})

    assert result.returncode == 2
    assert result.stderr.startswith("orders up: ORDERS_TLS_CLIENT_CA is set"), result.stderr
    assert "ORDERS_TLS_PROBE_CERT and ORDERS_TLS_PROBE_KEY" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_a_server_with_an_unreadable_certificate_names_it_and_exits(tls_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "server.crt"

    result = subprocess.run([sys.executable, "-m", "server", "command-server"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env=tls_env | {"ORDERS_TLS_CERT": str(missing)})

    assert result.returncode == 2
    assert result.stderr == (f"orders command-server: ORDERS_TLS_CERT={str(missing)!r}: No such file or directory; "
                             "expected the path of a readable PEM file holding a certificate\n")

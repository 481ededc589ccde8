"""Where a process's metrics endpoint listens: this machine only, unless a host says otherwise."""

from __future__ import annotations

import pytest

from server.telemetry import metrics_bind


@pytest.mark.parametrize(("addr", "bind"), [
    (":9464", ("127.0.0.1", 9464)),
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9464", ("0.0.0.0", 9464)),
    ("10.1.2.3:80", ("10.1.2.3", 80)),
    ("[::]:9464", ("::", 9464)),
    ("[::1]:9464", ("::1", 9464)),
])
def test_an_empty_host_binds_the_loopback_and_a_given_one_is_kept(addr: str, bind: tuple[str, int]) -> None:
    assert metrics_bind(addr) == bind

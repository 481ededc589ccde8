"""TLS settings: both files or neither, readable PEM of the right kind, a key that matches its
certificate, mutual TLS only on top of TLS; each refusal names the variable, never the contents."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ConfigError, Settings
from tests.certs import Authority, Issued


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Authority, Issued, Issued]:
    folder = tmp_path_factory.mktemp("certs")
    ca = Authority.create(folder, "ca")
    return ca, ca.issue(folder, "server", server=True), ca.issue(folder, "client")


def problems(**env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    return raised.value.problems


def test_no_tls_variables_mean_plaintext() -> None:
    assert Settings.from_env({}).tls is None


def test_a_certificate_and_its_key_turn_tls_on(files: tuple[Authority, Issued, Issued]) -> None:
    _, server, _ = files

    tls = Settings.from_env({"ORDERS_TLS_CERT": str(server.cert), "ORDERS_TLS_KEY": str(server.key)}).tls

    assert tls is not None and (tls.cert, tls.key) == (server.cert, server.key)
    assert not tls.mutual and tls.probe is None


def test_a_client_ca_turns_mutual_tls_on_and_a_probe_certificate_is_kept(files: tuple[Authority, Issued, Issued]) -> None:
    ca, server, client = files

    tls = Settings.from_env({
        "ORDERS_TLS_CERT": str(server.cert), "ORDERS_TLS_KEY": str(server.key), "ORDERS_TLS_CLIENT_CA": str(ca.cert),
        "ORDERS_TLS_PROBE_CERT": str(client.cert), "ORDERS_TLS_PROBE_KEY": str(client.key),
    }).tls

    assert tls is not None and tls.mutual and tls.client_ca == ca.cert
    assert tls.probe == (client.cert, client.key)


def test_orders_up_under_mutual_tls_needs_a_probe_certificate(files: tuple[Authority, Issued, Issued]) -> None:
    ca, server, _ = files
    settings = Settings.from_env({"ORDERS_TLS_CERT": str(server.cert), "ORDERS_TLS_KEY": str(server.key),
                                  "ORDERS_TLS_CLIENT_CA": str(ca.cert)})

    with pytest.raises(ConfigError) as raised:
        settings.require_probe_certificate()

    assert "set ORDERS_TLS_PROBE_CERT and ORDERS_TLS_PROBE_KEY" in str(raised.value)


def test_a_certificate_without_its_key_is_refused(files: tuple[Authority, Issued, Issued]) -> None:
    _, server, _ = files

    assert problems(ORDERS_TLS_CERT=str(server.cert)) == (
        "ORDERS_TLS_KEY='': unset while ORDERS_TLS_CERT is set; expected both ORDERS_TLS_CERT and ORDERS_TLS_KEY, "
        "or neither",)
    assert "ORDERS_TLS_CERT='': unset while ORDERS_TLS_KEY is set" in problems(ORDERS_TLS_KEY=str(server.key))[0]


def test_a_missing_file_is_named(tmp_path: Path, files: tuple[Authority, Issued, Issued]) -> None:
    _, server, _ = files
    missing = tmp_path / "nowhere.crt"

    assert problems(ORDERS_TLS_CERT=str(missing), ORDERS_TLS_KEY=str(server.key)) == (
        f"ORDERS_TLS_CERT={str(missing)!r}: No such file or directory; expected the path of a readable PEM file "
        "holding a certificate",)


def test_files_of_the_wrong_kind_are_refused_without_showing_their_contents(
    files: tuple[Authority, Issued, Issued],
) -> None:
    _, server, _ = files

    found = problems(ORDERS_TLS_CERT=str(server.key), ORDERS_TLS_KEY=str(server.cert))

    assert [p.split("=", 1)[0] for p in found] == ["ORDERS_TLS_CERT", "ORDERS_TLS_KEY"]
    assert "no CERTIFICATE block in it" in found[0] and "no PRIVATE KEY block in it" in found[1]
    assert all("BEGIN" not in p for p in found)


def test_a_key_of_another_certificate_is_refused(files: tuple[Authority, Issued, Issued]) -> None:
    _, server, client = files

    assert problems(ORDERS_TLS_CERT=str(server.cert), ORDERS_TLS_KEY=str(client.key)) == (
        f"ORDERS_TLS_KEY={str(client.key)!r}: not the private key of that certificate; expected the private key of "
        "ORDERS_TLS_CERT",)


def test_an_encrypted_key_is_refused(tmp_path: Path, files: tuple[Authority, Issued, Issued]) -> None:
    _, server, _ = files
    key = tmp_path / "encrypted.key"
    key.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")

    assert "the key is encrypted; gRPC needs it unencrypted" in problems(
        ORDERS_TLS_CERT=str(server.cert), ORDERS_TLS_KEY=str(key))[0]


def test_mutual_tls_without_tls_is_refused(files: tuple[Authority, Issued, Issued]) -> None:
    ca, _, client = files

    found = problems(ORDERS_TLS_CLIENT_CA=str(ca.cert), ORDERS_TLS_PROBE_CERT=str(client.cert),
                     ORDERS_TLS_PROBE_KEY=str(client.key))

    assert [p.split("=", 1)[0] for p in found] == ["ORDERS_TLS_CLIENT_CA", "ORDERS_TLS_PROBE_CERT"]
    assert all("set while ORDERS_TLS_CERT is not" in p for p in found)

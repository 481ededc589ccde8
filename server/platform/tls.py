"""TLS credentials for our gRPC servers and for the probes of our own that reach them, built
from the PEM files in Settings.tls. Files are read here, once per start: rotating a certificate
means replacing the files and restarting the process."""

from __future__ import annotations

import grpc

from server.config import TlsFiles


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """TLS with the server's certificate chain; with a client CA, mutual TLS: the handshake fails
    for a client without a certificate signed by that CA (health probes included)."""
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=tls.client_ca.read_bytes() if tls.client_ca else None,
        require_client_auth=tls.mutual,
    )


def probe_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """What `orders up` probes its own servers with: it trusts exactly the certificate they present
    (a pin, so it needs no separate CA setting; the certificate must name the address probed), and
    under mutual TLS presents the probe certificate."""
    key, chain = (tls.probe[1].read_bytes(), tls.probe[0].read_bytes()) if tls.probe else (None, None)
    return grpc.ssl_channel_credentials(tls.cert.read_bytes(), key, chain)


def transport_name(tls: TlsFiles | None) -> str:
    """How a server is reached, for its log line and the banner."""
    return "plaintext" if tls is None else "mutual TLS" if tls.mutual else "TLS"

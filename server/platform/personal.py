"""Personal data under per-customer keys (crypto-shredding). Each customer gets a random data key
when registered; their name and email are sealed with it (AES-256-GCM) before they enter an event,
and so the stream and any dead letter. The data key is stored wrapped by the key-encryption key
(ORDERS_KEK), and deleting it (ForgetCustomer) makes every copy of the sealed fields unreadable.

Sealed bytes are a 12-byte random nonce followed by the ciphertext and its 16-byte tag; the
associated data binds them to one tenant and customer, so a sealed value copied onto another
customer does not open."""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orders.v1 import events_pb2

KEY_BYTES = 32
NONCE_BYTES = 12
KEK_FORM = "32 bytes, base64-encoded (for example: head -c 32 /dev/urandom | base64)"
# What readers show for the personal fields of a forgotten customer (docs/privacy.md).
FORGOTTEN_NAME = "(forgotten)"
FORGOTTEN_EMAIL = ""


class KekError(ValueError):
    """ORDERS_KEK is not a key-encryption key of the expected form."""


def parse_kek(text: str) -> bytes:
    """The key-encryption key from its configured form, or KekError saying what is wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KekError(f"ORDERS_KEK is not base64; it must be {KEK_FORM}") from None
    if len(key) != KEY_BYTES:
        raise KekError(f"ORDERS_KEK decodes to {len(key)} bytes; it must be {KEK_FORM}")
    return key


def new_kek_text() -> str:
    """A fresh key-encryption key in its configured form."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _aad(tenant_id: str, customer_id: str, purpose: bytes) -> bytes:
    return purpose + b"\0" + tenant_id.encode() + b"\0" + customer_id.encode()


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)


@dataclass(frozen=True)
class DataKey:
    """One customer's data key, and the same key wrapped by the KEK (what the database stores)."""

    key: bytes
    wrapped: bytes


def new_data_key(kek: bytes, tenant_id: str, customer_id: str) -> DataKey:
    key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
    return DataKey(key, _seal(kek, key, _aad(tenant_id, customer_id, b"orders.data-key")))


def unwrap(kek: bytes, wrapped: bytes, tenant_id: str, customer_id: str) -> bytes:
    """The data key from its wrapped form; InvalidTag when the KEK or the owner is not its own."""
    return _open(kek, wrapped, _aad(tenant_id, customer_id, b"orders.data-key"))


def seal_personal(key: bytes, tenant_id: str, customer_id: str, display_name: str, email: str) -> bytes:
    data = events_pb2.PersonalData(display_name=display_name, email=email).SerializeToString()
    return _seal(key, data, _aad(tenant_id, customer_id, b"orders.personal"))


def open_personal(key: bytes | None, tenant_id: str, customer_id: str, sealed: bytes) -> events_pb2.PersonalData:
    """The personal fields; the forgotten placeholder when there is no key any more (None) or the
    sealed bytes do not open with it."""
    if key is not None:
        try:
            return events_pb2.PersonalData.FromString(
                _open(key, sealed, _aad(tenant_id, customer_id, b"orders.personal")))
        except (InvalidTag, ValueError):
            pass
    return events_pb2.PersonalData(display_name=FORGOTTEN_NAME, email=FORGOTTEN_EMAIL)


def registered_personal(env: events_pb2.Envelope, key: bytes | None) -> events_pb2.PersonalData:
    """The personal fields of a CustomerRegistered event of either schema version: version 1 in
    clear (written before personal data was sealed), version 2 sealed with the customer's key."""
    registered = env.customer_registered
    if not registered.sealed_personal_data:
        return events_pb2.PersonalData(display_name=registered.display_name, email=registered.email)
    return open_personal(key, env.tenant_id, registered.customer_id, registered.sealed_personal_data)

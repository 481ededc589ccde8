"""Personal data under per-customer keys: sealed, opened, and unreadable once the key is gone."""

from __future__ import annotations

import pytest

from orders.v1 import events_pb2
from server.config import ConfigError, Settings
from server.platform import personal

KEK = bytes(range(32))


def test_given_a_data_key_when_personal_fields_are_sealed_then_only_that_key_opens_them() -> None:
    key = personal.new_data_key(KEK, "t-1", "c-1")
    sealed = personal.seal_personal(key.key, "t-1", "c-1", "Ada Lovelace", "ada@example.com")

    assert b"Ada" not in sealed and b"ada@" not in sealed
    opened = personal.open_personal(personal.unwrap(KEK, key.wrapped, "t-1", "c-1"), "t-1", "c-1", sealed)
    assert (opened.display_name, opened.email) == ("Ada Lovelace", "ada@example.com")


def test_given_no_key_or_another_customer_when_opened_then_the_forgotten_placeholder_is_shown() -> None:
    key = personal.new_data_key(KEK, "t-1", "c-1")
    sealed = personal.seal_personal(key.key, "t-1", "c-1", "Ada", "ada@example.com")

    for opened in (personal.open_personal(None, "t-1", "c-1", sealed),
                   personal.open_personal(key.key, "t-1", "c-2", sealed)):
        assert (opened.display_name, opened.email) == (personal.FORGOTTEN_NAME, personal.FORGOTTEN_EMAIL)


def test_given_a_version_1_registration_when_read_then_its_fields_in_clear_are_taken() -> None:
    env = events_pb2.Envelope(tenant_id="t-1", customer_registered=events_pb2.CustomerRegistered(
        customer_id="c-1", display_name="Ada", email="ada@example.com"))

    assert personal.registered_personal(env, None).display_name == "Ada"


@pytest.mark.parametrize("value", ["not base64!", "c2hvcnQ="])
def test_when_orders_kek_is_malformed_then_the_settings_refuse_it_without_echoing_it(value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"ORDERS_KEK": value})

    assert "ORDERS_KEK" in str(refused.value) and value not in str(refused.value)


def test_when_orders_kek_is_well_formed_then_the_settings_hold_its_32_bytes() -> None:
    assert Settings.from_env({"ORDERS_KEK": personal.new_kek_text()}).require_kek().__len__() == 32
    with pytest.raises(ConfigError):
        Settings.from_env({}).require_kek()

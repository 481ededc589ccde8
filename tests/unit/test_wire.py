"""Consistency tokens and request hashing: pure translation code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders.v1 import command_service_pb2 as pb
from server.domain.errors import InvalidArgumentError
from server.platform import wire


@given(st.sampled_from(["order", "customer"]), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True), st.integers(1, 2**62))
def test_a_consistency_token_decodes_to_what_was_encoded(kind: str, aggregate_id: str, version: int) -> None:
    token = wire.ConsistencyToken(kind, aggregate_id, version)
    assert wire.ConsistencyToken.decode(token.encode()) == token


@pytest.mark.parametrize("garbage", ["", "!!!", "MXxvcmRlcg", "eHx5fHp8MQ", "MXxvcmRlcnxvLTF8MA"])
def test_a_malformed_token_is_a_field_violation(garbage: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        wire.ConsistencyToken.decode(garbage)
    assert [v.field for v in caught.value.violations] == ["consistency_token"]


def test_the_request_hash_ignores_the_request_id_but_not_the_payload() -> None:
    a = pb.PlaceOrderRequest(request_id="r-1", order_id="o-1", customer_id="c-1")
    b = pb.PlaceOrderRequest(request_id="r-2", order_id="o-1", customer_id="c-1")
    c = pb.PlaceOrderRequest(request_id="r-1", order_id="o-2", customer_id="c-1")
    assert wire.request_hash("PlaceOrder", a) == wire.request_hash("PlaceOrder", b)
    assert wire.request_hash("PlaceOrder", a) != wire.request_hash("PlaceOrder", c)
    assert a.request_id == "r-1"  # the caller's message is left as it was

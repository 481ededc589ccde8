"""Request hashing: pure translation code."""

from __future__ import annotations

from orders.v1 import command_service_pb2 as pb
from server.platform import wire


def test_the_request_hash_ignores_the_request_id_but_not_the_payload() -> None:
    a = pb.PlaceOrderRequest(request_id="r-1", order_id="o-1", customer_id="c-1")
    b = pb.PlaceOrderRequest(request_id="r-2", order_id="o-1", customer_id="c-1")
    c = pb.PlaceOrderRequest(request_id="r-1", order_id="o-2", customer_id="c-1")
    assert wire.request_hash("PlaceOrder", a) == wire.request_hash("PlaceOrder", b)
    assert wire.request_hash("PlaceOrder", a) != wire.request_hash("PlaceOrder", c)
    assert a.request_id == "r-1"  # the caller's message is left as it was

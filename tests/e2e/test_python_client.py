"""The Python client against the real servers: round trip, and errors as exceptions."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from clients.python import OrdersClient, OrdersError
from orders.v1 import types_pb2
from tests.e2e.client import eur, new_id
from tests.harness import Stack, token

pytestmark = pytest.mark.e2e


def test_the_client_places_an_order_and_reads_it_back(stack: Stack) -> None:
    async def scenario() -> None:
        async with OrdersClient(stack.command_addr, stack.query_addr, token=token()) as client:
            customer_id, order_id = new_id("c"), new_id("o")
            await client.register_customer(customer_id, "Ada", "ada@example.com")
            line = types_pb2.OrderLine(product_id="p-1", quantity=4, unit_price=eur(2, 500_000_000))
            placed = await client.place_order(order_id, customer_id, [line])
            summary = await client.get_order_summary(order_id, placed.consistency_token)
            assert (summary.order_id, summary.total) == (order_id, eur(10))

    asyncio.run(scenario())


def test_the_client_raises_errors_with_their_field_violations(stack: Stack) -> None:
    async def scenario() -> OrdersError:
        async with OrdersClient(stack.command_addr, stack.query_addr, token=token()) as client:
            line = types_pb2.OrderLine(product_id="p-1", quantity=-1, unit_price=eur(1))
            with pytest.raises(OrdersError) as caught:
                await client.place_order(new_id("o"), new_id("c"), [line])
            return caught.value

    error = asyncio.run(scenario())
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(error.field_violations) == {"lines[0].quantity"}


def test_the_client_without_a_token_is_told_it_is_unauthenticated(stack: Stack) -> None:
    async def scenario() -> OrdersError:
        async with OrdersClient(stack.command_addr, stack.query_addr) as client:
            with pytest.raises(OrdersError) as caught:
                await client.get_order_summary(new_id("o"))
            return caught.value

    error = asyncio.run(scenario())
    assert (error.code, error.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING")

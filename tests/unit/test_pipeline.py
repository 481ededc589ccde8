"""The command pipeline's table: one route per CommandService RPC, each answering with that RPC's
response, carrying what the handler wrote."""

from __future__ import annotations

from typing import Any

import pytest

from orders.v1 import command_service_pb2 as pb
from server.command import pipeline
from server.command.unit_of_work import Written

METHODS = pb.DESCRIPTOR.services_by_name["CommandService"].methods_by_name


def test_every_command_rpc_has_exactly_one_route() -> None:
    assert sorted(route.method for route in pipeline.ROUTES) == sorted(METHODS)


@pytest.mark.parametrize("route", pipeline.ROUTES, ids=[route.method for route in pipeline.ROUTES])
def test_a_route_replies_with_its_rpcs_response_carrying_what_was_written(route: pipeline.Route[Any, Any, Any]) -> None:
    reply = route.reply(Written("kind", "id-1", 7), "token")

    assert route.response.DESCRIPTOR is METHODS[route.method].output_type
    assert type(reply) is route.response
    id_field = next(f.name for f in reply.DESCRIPTOR.fields if f.name.endswith("_id"))
    assert (getattr(reply, id_field), reply.version, reply.consistency_token) == ("id-1", 7, "token")

"""A WatchOrders subscription that resumes by itself.

Every update and heartbeat carries an opaque resume token: the position just after it. The
subscription keeps the last one it received and, when the stream breaks (the query server
restarted, stopped with SHUTTING_DOWN, or the connection dropped), calls again with it after a
short backoff. The server continues strictly after that position, so across a break no update is
missed and none is repeated."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from orders.v1 import query_service_pb2 as query_pb
from orders_client.errors import OrdersError, UnavailableError, from_rpc_error

# How a broken stream ends on the client: the server went away (UNAVAILABLE, also SHUTTING_DOWN),
# or the connection was reset under the stream (INTERNAL, UNKNOWN, CANCELLED by the peer).
RESUMABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                       grpc.StatusCode.CANCELLED})


@dataclass(frozen=True)
class Reconnect:
    """Backoff between resumes: a random wait up to initial * 2^n, capped at `max_backoff`. When
    the stream has been broken for `give_up_after` seconds with no message received since (None:
    never give up), the last error is raised."""

    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    give_up_after: float | None = 60.0

    def backoff(self, failures: int) -> float:
        return random.uniform(0, min(self.max_backoff, self.initial_backoff * 2 ** failures))


class OrderSubscription:
    """An async iterator of `OrderUpdate`, also an async context manager that closes it.

    `resume_token`: the position after the last message received (an update or a heartbeat);
    pass it to a later `watch_orders` to continue from there. `caught_up`: the current state of
    every matching order has been delivered. `resumes`: how many times the stream was resumed."""

    def __init__(self, call: Callable[..., Any], request: query_pb.WatchOrdersRequest,
                 metadata: Callable[[], tuple[tuple[str, str], ...]], reconnect: Reconnect) -> None:
        self._call = call
        self._request = request
        self._metadata = metadata
        self._reconnect = reconnect
        self.resume_token = request.resume_token
        self.caught_up = False
        self.resumes = 0
        self._stream: Any = None
        self._closed = False
        self._updates = self._run()

    def __aiter__(self) -> OrderSubscription:
        return self

    async def __anext__(self) -> query_pb.OrderUpdate:
        return await self._updates.__anext__()

    async def __aenter__(self) -> OrderSubscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Ends the stream; the iterator then stops (also one another task is waiting on)."""
        self._closed = True
        if self._stream is not None:
            self._stream.cancel()
        with contextlib.suppress(RuntimeError):  # another task is inside it: it ends on the cancelled stream
            await self._updates.aclose()

    async def _run(self) -> AsyncGenerator[query_pb.OrderUpdate, None]:
        loop = asyncio.get_running_loop()
        failures = 0
        broken_since: float | None = None  # when the stream broke, if nothing came since
        while not self._closed:
            request = query_pb.WatchOrdersRequest()
            request.CopyFrom(self._request)
            request.resume_token = self.resume_token
            self._stream = self._call(request, metadata=self._metadata())
            error: OrdersError
            try:
                async for message in self._stream:
                    failures, broken_since = 0, None
                    if message.HasField("update"):
                        # Kept before handing the update out: a consumer that stops here resumes after it.
                        self.resume_token = message.update.resume_token
                        yield message.update
                    else:
                        self.resume_token = message.heartbeat.resume_token
                        self.caught_up = True
                error = UnavailableError(grpc.StatusCode.UNAVAILABLE, "the server ended the stream")
            except asyncio.CancelledError:
                if self._closed:
                    return
                raise
            except grpc.aio.AioRpcError as rpc_error:
                if self._closed:
                    return
                error = from_rpc_error(rpc_error)
                if rpc_error.code() not in RESUMABLE:
                    raise error from None
            finally:
                self._stream.cancel()
            broken_since = loop.time() if broken_since is None else broken_since
            give_up = self._reconnect.give_up_after
            if give_up is not None and loop.time() - broken_since > give_up:
                raise error
            await asyncio.sleep(self._reconnect.backoff(failures))
            failures += 1
            self.resumes += 1

import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orders.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetOrderSummaryRequest(_message.Message):
    __slots__ = ("order_id", "consistency_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    consistency_token: str
    def __init__(self, order_id: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetOrderSummaryResponse(_message.Message):
    __slots__ = ("summary",)
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    summary: OrderSummary
    def __init__(self, summary: _Optional[_Union[OrderSummary, _Mapping]] = ...) -> None: ...

class OrderSummary(_message.Message):
    __slots__ = ("order_id", "customer_id", "total", "state", "version", "lines", "update_time")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    total: _types_pb2.Money
    state: _types_pb2.OrderState
    version: int
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.OrderLine]
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., total: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_types_pb2.OrderState, str]] = ..., version: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.OrderLine, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

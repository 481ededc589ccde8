import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orders.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("event_id", "event_type", "schema_version", "tenant_id", "aggregate_type", "aggregate_id", "aggregate_version", "occur_time", "correlation_id", "causation_id", "actor", "request_id", "customer_registered", "order_placed", "order_confirmed", "order_cancelled", "order_shipped", "credit_reserved", "credit_released", "stock_added", "stock_reserved", "stock_released", "customer_forgotten")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    CAUSATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_REGISTERED_FIELD_NUMBER: _ClassVar[int]
    ORDER_PLACED_FIELD_NUMBER: _ClassVar[int]
    ORDER_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    ORDER_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    ORDER_SHIPPED_FIELD_NUMBER: _ClassVar[int]
    CREDIT_RESERVED_FIELD_NUMBER: _ClassVar[int]
    CREDIT_RELEASED_FIELD_NUMBER: _ClassVar[int]
    STOCK_ADDED_FIELD_NUMBER: _ClassVar[int]
    STOCK_RESERVED_FIELD_NUMBER: _ClassVar[int]
    STOCK_RELEASED_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_FORGOTTEN_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    schema_version: int
    tenant_id: str
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    occur_time: _timestamp_pb2.Timestamp
    correlation_id: str
    causation_id: str
    actor: str
    request_id: str
    customer_registered: CustomerRegistered
    order_placed: OrderPlaced
    order_confirmed: OrderConfirmed
    order_cancelled: OrderCancelled
    order_shipped: OrderShipped
    credit_reserved: CreditReserved
    credit_released: CreditReleased
    stock_added: StockAdded
    stock_reserved: StockReserved
    stock_released: StockReleased
    customer_forgotten: CustomerForgotten
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., schema_version: _Optional[int] = ..., tenant_id: _Optional[str] = ..., aggregate_type: _Optional[str] = ..., aggregate_id: _Optional[str] = ..., aggregate_version: _Optional[int] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., correlation_id: _Optional[str] = ..., causation_id: _Optional[str] = ..., actor: _Optional[str] = ..., request_id: _Optional[str] = ..., customer_registered: _Optional[_Union[CustomerRegistered, _Mapping]] = ..., order_placed: _Optional[_Union[OrderPlaced, _Mapping]] = ..., order_confirmed: _Optional[_Union[OrderConfirmed, _Mapping]] = ..., order_cancelled: _Optional[_Union[OrderCancelled, _Mapping]] = ..., order_shipped: _Optional[_Union[OrderShipped, _Mapping]] = ..., credit_reserved: _Optional[_Union[CreditReserved, _Mapping]] = ..., credit_released: _Optional[_Union[CreditReleased, _Mapping]] = ..., stock_added: _Optional[_Union[StockAdded, _Mapping]] = ..., stock_reserved: _Optional[_Union[StockReserved, _Mapping]] = ..., stock_released: _Optional[_Union[StockReleased, _Mapping]] = ..., customer_forgotten: _Optional[_Union[CustomerForgotten, _Mapping]] = ...) -> None: ...

class CustomerRegistered(_message.Message):
    __slots__ = ("customer_id", "display_name", "email", "credit_limit", "sealed_personal_data")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    SEALED_PERSONAL_DATA_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    display_name: str
    email: str
    credit_limit: _types_pb2.Money
    sealed_personal_data: bytes
    def __init__(self, customer_id: _Optional[str] = ..., display_name: _Optional[str] = ..., email: _Optional[str] = ..., credit_limit: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., sealed_personal_data: _Optional[bytes] = ...) -> None: ...

class PersonalData(_message.Message):
    __slots__ = ("display_name", "email")
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    display_name: str
    email: str
    def __init__(self, display_name: _Optional[str] = ..., email: _Optional[str] = ...) -> None: ...

class CustomerForgotten(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class OrderPlaced(_message.Message):
    __slots__ = ("order_id", "customer_id", "lines", "total", "line_totals")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LINE_TOTALS_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.OrderLine]
    total: _types_pb2.Money
    line_totals: _containers.RepeatedCompositeFieldContainer[_types_pb2.Money]
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.OrderLine, _Mapping]]] = ..., total: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., line_totals: _Optional[_Iterable[_Union[_types_pb2.Money, _Mapping]]] = ...) -> None: ...

class OrderConfirmed(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class OrderCancelled(_message.Message):
    __slots__ = ("order_id", "reason", "note")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    reason: _types_pb2.CancellationReason
    note: str
    def __init__(self, order_id: _Optional[str] = ..., reason: _Optional[_Union[_types_pb2.CancellationReason, str]] = ..., note: _Optional[str] = ...) -> None: ...

class OrderShipped(_message.Message):
    __slots__ = ("order_id",)
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    def __init__(self, order_id: _Optional[str] = ...) -> None: ...

class CreditReserved(_message.Message):
    __slots__ = ("customer_id", "order_id", "amount")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    order_id: str
    amount: _types_pb2.Money
    def __init__(self, customer_id: _Optional[str] = ..., order_id: _Optional[str] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ...) -> None: ...

class CreditReleased(_message.Message):
    __slots__ = ("customer_id", "order_id", "amount")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    order_id: str
    amount: _types_pb2.Money
    def __init__(self, customer_id: _Optional[str] = ..., order_id: _Optional[str] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ...) -> None: ...

class StockAdded(_message.Message):
    __slots__ = ("product_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class StockReserved(_message.Message):
    __slots__ = ("product_id", "order_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    order_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., order_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class StockReleased(_message.Message):
    __slots__ = ("product_id", "order_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    order_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., order_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

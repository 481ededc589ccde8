import datetime

from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from orders.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SagaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_STATE_UNSPECIFIED: _ClassVar[SagaState]
    SAGA_STATE_RESERVING_CREDIT: _ClassVar[SagaState]
    SAGA_STATE_RESERVING_STOCK: _ClassVar[SagaState]
    SAGA_STATE_CONFIRMING: _ClassVar[SagaState]
    SAGA_STATE_COMPENSATING: _ClassVar[SagaState]
    SAGA_STATE_CONFIRMED: _ClassVar[SagaState]
    SAGA_STATE_CANCELLED: _ClassVar[SagaState]
    SAGA_STATE_STUCK: _ClassVar[SagaState]
SAGA_STATE_UNSPECIFIED: SagaState
SAGA_STATE_RESERVING_CREDIT: SagaState
SAGA_STATE_RESERVING_STOCK: SagaState
SAGA_STATE_CONFIRMING: SagaState
SAGA_STATE_COMPENSATING: SagaState
SAGA_STATE_CONFIRMED: SagaState
SAGA_STATE_CANCELLED: SagaState
SAGA_STATE_STUCK: SagaState

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
    __slots__ = ("order_id", "customer_id", "total", "state", "version", "lines", "update_time", "cancellation", "saga_state")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    CANCELLATION_FIELD_NUMBER: _ClassVar[int]
    SAGA_STATE_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    total: _types_pb2.Money
    state: _types_pb2.OrderState
    version: int
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.OrderLine]
    update_time: _timestamp_pb2.Timestamp
    cancellation: OrderCancellation
    saga_state: SagaState
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., total: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., state: _Optional[_Union[_types_pb2.OrderState, str]] = ..., version: _Optional[int] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.OrderLine, _Mapping]]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cancellation: _Optional[_Union[OrderCancellation, _Mapping]] = ..., saga_state: _Optional[_Union[SagaState, str]] = ...) -> None: ...

class OrderCancellation(_message.Message):
    __slots__ = ("reason", "note")
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    reason: _types_pb2.CancellationReason
    note: str
    def __init__(self, reason: _Optional[_Union[_types_pb2.CancellationReason, str]] = ..., note: _Optional[str] = ...) -> None: ...

class ListOrdersRequest(_message.Message):
    __slots__ = ("customer_id", "state", "page_size", "page_token", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    state: _types_pb2.OrderState
    page_size: int
    page_token: str
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., state: _Optional[_Union[_types_pb2.OrderState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ListOrdersResponse(_message.Message):
    __slots__ = ("orders", "next_page_token")
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    orders: _containers.RepeatedCompositeFieldContainer[OrderSummary]
    next_page_token: str
    def __init__(self, orders: _Optional[_Iterable[_Union[OrderSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetCustomerOrdersRequest(_message.Message):
    __slots__ = ("customer_id", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class OrderStateTotal(_message.Message):
    __slots__ = ("state", "order_count", "total")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ORDER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.OrderState
    order_count: int
    total: _types_pb2.Money
    def __init__(self, state: _Optional[_Union[_types_pb2.OrderState, str]] = ..., order_count: _Optional[int] = ..., total: _Optional[_Union[_types_pb2.Money, _Mapping]] = ...) -> None: ...

class GetCustomerOrdersResponse(_message.Message):
    __slots__ = ("customer_id", "totals", "last_order_time")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    LAST_ORDER_TIME_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    totals: _containers.RepeatedCompositeFieldContainer[OrderStateTotal]
    last_order_time: _timestamp_pb2.Timestamp
    def __init__(self, customer_id: _Optional[str] = ..., totals: _Optional[_Iterable[_Union[OrderStateTotal, _Mapping]]] = ..., last_order_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetProductSalesRequest(_message.Message):
    __slots__ = ("product_id", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ProductSales(_message.Message):
    __slots__ = ("product_id", "units_sold", "revenue")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    UNITS_SOLD_FIELD_NUMBER: _ClassVar[int]
    REVENUE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    units_sold: int
    revenue: _types_pb2.Money
    def __init__(self, product_id: _Optional[str] = ..., units_sold: _Optional[int] = ..., revenue: _Optional[_Union[_types_pb2.Money, _Mapping]] = ...) -> None: ...

class GetProductSalesResponse(_message.Message):
    __slots__ = ("sales",)
    SALES_FIELD_NUMBER: _ClassVar[int]
    sales: _containers.RepeatedCompositeFieldContainer[ProductSales]
    def __init__(self, sales: _Optional[_Iterable[_Union[ProductSales, _Mapping]]] = ...) -> None: ...

class GetCustomerRequest(_message.Message):
    __slots__ = ("customer_id", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetCustomerResponse(_message.Message):
    __slots__ = ("customer",)
    CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    customer: Customer
    def __init__(self, customer: _Optional[_Union[Customer, _Mapping]] = ...) -> None: ...

class Customer(_message.Message):
    __slots__ = ("customer_id", "credit_limit", "credit_reserved", "credit_available", "version", "update_time")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_RESERVED_FIELD_NUMBER: _ClassVar[int]
    CREDIT_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    credit_limit: _types_pb2.Money
    credit_reserved: _types_pb2.Money
    credit_available: _types_pb2.Money
    version: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, customer_id: _Optional[str] = ..., credit_limit: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., credit_reserved: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., credit_available: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetProductRequest(_message.Message):
    __slots__ = ("product_id", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class GetProductResponse(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("product_id", "on_hand", "reserved", "available", "version", "update_time")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    ON_HAND_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    on_hand: int
    reserved: int
    available: int
    version: int
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, product_id: _Optional[str] = ..., on_hand: _Optional[int] = ..., reserved: _Optional[int] = ..., available: _Optional[int] = ..., version: _Optional[int] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchOrdersRequest(_message.Message):
    __slots__ = ("order_id", "customer_id", "resume_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    customer_id: str
    resume_token: str
    def __init__(self, order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchOrdersResponse(_message.Message):
    __slots__ = ("update", "heartbeat")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    update: OrderUpdate
    heartbeat: WatchHeartbeat
    def __init__(self, update: _Optional[_Union[OrderUpdate, _Mapping]] = ..., heartbeat: _Optional[_Union[WatchHeartbeat, _Mapping]] = ...) -> None: ...

class OrderUpdate(_message.Message):
    __slots__ = ("summary", "resume_token")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    summary: OrderSummary
    resume_token: str
    def __init__(self, summary: _Optional[_Union[OrderSummary, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class WatchHeartbeat(_message.Message):
    __slots__ = ("send_time", "resume_token")
    SEND_TIME_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    send_time: _timestamp_pb2.Timestamp
    resume_token: str
    def __init__(self, send_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

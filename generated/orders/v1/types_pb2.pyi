from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OrderState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ORDER_STATE_UNSPECIFIED: _ClassVar[OrderState]
    ORDER_STATE_PLACED: _ClassVar[OrderState]
    ORDER_STATE_CONFIRMED: _ClassVar[OrderState]
    ORDER_STATE_SHIPPED: _ClassVar[OrderState]
    ORDER_STATE_CANCELLED: _ClassVar[OrderState]

class CancellationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCELLATION_REASON_UNSPECIFIED: _ClassVar[CancellationReason]
    CANCELLATION_REASON_CUSTOMER_REQUEST: _ClassVar[CancellationReason]
    CANCELLATION_REASON_OUT_OF_STOCK: _ClassVar[CancellationReason]
    CANCELLATION_REASON_CREDIT_DECLINED: _ClassVar[CancellationReason]
    CANCELLATION_REASON_OTHER: _ClassVar[CancellationReason]
    CANCELLATION_REASON_DEADLINE_EXCEEDED: _ClassVar[CancellationReason]
ORDER_STATE_UNSPECIFIED: OrderState
ORDER_STATE_PLACED: OrderState
ORDER_STATE_CONFIRMED: OrderState
ORDER_STATE_SHIPPED: OrderState
ORDER_STATE_CANCELLED: OrderState
CANCELLATION_REASON_UNSPECIFIED: CancellationReason
CANCELLATION_REASON_CUSTOMER_REQUEST: CancellationReason
CANCELLATION_REASON_OUT_OF_STOCK: CancellationReason
CANCELLATION_REASON_CREDIT_DECLINED: CancellationReason
CANCELLATION_REASON_OTHER: CancellationReason
CANCELLATION_REASON_DEADLINE_EXCEEDED: CancellationReason

class Money(_message.Message):
    __slots__ = ("currency_code", "units", "nanos")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    units: int
    nanos: int
    def __init__(self, currency_code: _Optional[str] = ..., units: _Optional[int] = ..., nanos: _Optional[int] = ...) -> None: ...

class OrderLine(_message.Message):
    __slots__ = ("product_id", "quantity", "unit_price")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    unit_price: Money
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

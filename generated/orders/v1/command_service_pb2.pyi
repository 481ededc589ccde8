from google.api import field_behavior_pb2 as _field_behavior_pb2
from orders.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterCustomerRequest(_message.Message):
    __slots__ = ("request_id", "customer_id", "display_name", "email", "credit_limit")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    CREDIT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    customer_id: str
    display_name: str
    email: str
    credit_limit: _types_pb2.Money
    def __init__(self, request_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., display_name: _Optional[str] = ..., email: _Optional[str] = ..., credit_limit: _Optional[_Union[_types_pb2.Money, _Mapping]] = ...) -> None: ...

class ForgetCustomerRequest(_message.Message):
    __slots__ = ("request_id", "customer_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    customer_id: str
    def __init__(self, request_id: _Optional[str] = ..., customer_id: _Optional[str] = ...) -> None: ...

class ForgetCustomerResponse(_message.Message):
    __slots__ = ("customer_id", "version", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    version: int
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class RegisterCustomerResponse(_message.Message):
    __slots__ = ("customer_id", "version", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    version: int
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ReserveCreditRequest(_message.Message):
    __slots__ = ("request_id", "customer_id", "expected_version", "amount", "order_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    customer_id: str
    expected_version: int
    amount: _types_pb2.Money
    order_id: str
    def __init__(self, request_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., order_id: _Optional[str] = ...) -> None: ...

class ReserveCreditResponse(_message.Message):
    __slots__ = ("customer_id", "version", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    version: int
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ReleaseCreditRequest(_message.Message):
    __slots__ = ("request_id", "customer_id", "expected_version", "amount", "order_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    customer_id: str
    expected_version: int
    amount: _types_pb2.Money
    order_id: str
    def __init__(self, request_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., amount: _Optional[_Union[_types_pb2.Money, _Mapping]] = ..., order_id: _Optional[str] = ...) -> None: ...

class ReleaseCreditResponse(_message.Message):
    __slots__ = ("customer_id", "version", "consistency_token")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    version: int
    consistency_token: str
    def __init__(self, customer_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class AddStockRequest(_message.Message):
    __slots__ = ("request_id", "product_id", "expected_version", "quantity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    product_id: str
    expected_version: int
    quantity: int
    def __init__(self, request_id: _Optional[str] = ..., product_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., quantity: _Optional[int] = ...) -> None: ...

class AddStockResponse(_message.Message):
    __slots__ = ("product_id", "version", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    version: int
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ReserveStockRequest(_message.Message):
    __slots__ = ("request_id", "product_id", "expected_version", "quantity", "order_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    product_id: str
    expected_version: int
    quantity: int
    order_id: str
    def __init__(self, request_id: _Optional[str] = ..., product_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., quantity: _Optional[int] = ..., order_id: _Optional[str] = ...) -> None: ...

class ReserveStockResponse(_message.Message):
    __slots__ = ("product_id", "version", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    version: int
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ReleaseStockRequest(_message.Message):
    __slots__ = ("request_id", "product_id", "expected_version", "quantity", "order_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    product_id: str
    expected_version: int
    quantity: int
    order_id: str
    def __init__(self, request_id: _Optional[str] = ..., product_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., quantity: _Optional[int] = ..., order_id: _Optional[str] = ...) -> None: ...

class ReleaseStockResponse(_message.Message):
    __slots__ = ("product_id", "version", "consistency_token")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    version: int
    consistency_token: str
    def __init__(self, product_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "customer_id", "lines")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    customer_id: str
    lines: _containers.RepeatedCompositeFieldContainer[_types_pb2.OrderLine]
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[_types_pb2.OrderLine, _Mapping]]] = ...) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("order_id", "version", "consistency_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    version: int
    consistency_token: str
    def __init__(self, order_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ConfirmOrderRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "expected_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    expected_version: int
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ConfirmOrderResponse(_message.Message):
    __slots__ = ("order_id", "version", "consistency_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    version: int
    consistency_token: str
    def __init__(self, order_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class CancelOrderRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "expected_version", "reason", "note")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    expected_version: int
    reason: _types_pb2.CancellationReason
    note: str
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., expected_version: _Optional[int] = ..., reason: _Optional[_Union[_types_pb2.CancellationReason, str]] = ..., note: _Optional[str] = ...) -> None: ...

class CancelOrderResponse(_message.Message):
    __slots__ = ("order_id", "version", "consistency_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    version: int
    consistency_token: str
    def __init__(self, order_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

class ShipOrderRequest(_message.Message):
    __slots__ = ("request_id", "order_id", "expected_version")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    order_id: str
    expected_version: int
    def __init__(self, request_id: _Optional[str] = ..., order_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class ShipOrderResponse(_message.Message):
    __slots__ = ("order_id", "version", "consistency_token")
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    order_id: str
    version: int
    consistency_token: str
    def __init__(self, order_id: _Optional[str] = ..., version: _Optional[int] = ..., consistency_token: _Optional[str] = ...) -> None: ...

"""Domain errors: each says what is wrong in terms a caller can act on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request; `field` is the request field path, e.g. `lines[0].quantity`."""

    field: str
    description: str


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidArgumentError(DomainError):
    """A request is malformed, one violation per bad field; nothing was looked up or changed."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))
        self.violations = tuple(violations)


class InvalidCommandError(InvalidArgumentError):
    """The command itself is malformed; nothing was looked up or changed."""


class NotFoundError(DomainError):
    """The aggregate named by the command does not exist."""

    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        super().__init__(f"{aggregate_type} {aggregate_id!r} does not exist")
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id


class AlreadyExistsError(DomainError):
    """A command tried to create an aggregate whose id is taken."""

    def __init__(self, aggregate_type: str, aggregate_id: str) -> None:
        super().__init__(f"{aggregate_type} {aggregate_id!r} already exists")
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id


class PreconditionFailedError(DomainError):
    """The system is not in a state that allows the command (e.g. an unknown customer)."""

    def __init__(self, kind: str, subject: str, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.subject = subject
        self.description = description


class RequestIdReusedError(DomainError):
    """A request id was sent again with a different payload (AIP-155)."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id {request_id!r} was already used for a different request")
        self.request_id = request_id


class VersionConflictError(DomainError):
    """The aggregate changed since the caller read it: re-read, decide again, retry."""

    def __init__(self, aggregate_type: str, aggregate_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{aggregate_type} {aggregate_id!r} is at version {actual}, not {expected}")
        self.aggregate_type = aggregate_type
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual

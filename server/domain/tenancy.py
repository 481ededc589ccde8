"""What a tenant id is: the rule the servers apply to a token's tenant (or, with authentication
off, the x-tenant-id header) and the projector to every event's."""

from __future__ import annotations

from server.domain.errors import FieldViolation

MAX_TENANT_ID_LENGTH = 64


def tenant_violations(tenant_id: str, field: str) -> list[FieldViolation]:
    """Empty when `tenant_id` is 1-64 ASCII letters, digits, - or _."""
    if (0 < len(tenant_id) <= MAX_TENANT_ID_LENGTH and tenant_id.isascii()
            and tenant_id.replace("-", "").replace("_", "").isalnum()):
        return []
    return [FieldViolation(field, "must be 1-64 ASCII letters, digits, - or _")]

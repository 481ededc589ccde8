"""What a tenant id may be: one rule for the servers (a caller's tenant) and the projector (an
event's tenant), pure so that both can import it. A tenant id also becomes a NATS subject token,
so it can hold no '.', '*', '>' or space."""

from __future__ import annotations

MAX_LENGTH = 64
RULE = "1-64 ASCII letters, digits, - or _"


def is_valid(tenant_id: str) -> bool:
    return (0 < len(tenant_id) <= MAX_LENGTH and tenant_id.isascii()
            and tenant_id.replace("-", "").replace("_", "").isalnum())

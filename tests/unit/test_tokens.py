"""Page and resume tokens: round trip, and rejection when tampered, forged or reused elsewhere."""

from __future__ import annotations

import pytest

from server.domain.errors import InvalidArgumentError
from server.query import tokens

KEY = b"k" * 32


def test_a_token_round_trips_its_position() -> None:
    token = tokens.sign(KEY, "page", {"customer_id": "c-1"}, after="o-9")

    assert tokens.verify(KEY, token, "page", {"customer_id": "c-1"}, "page_token") == {"after": "o-9"}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: tokens._b64(b'{"f":{"customer_id":"c-1"},"k":"page","after":"o-1","v":1}') + "." + t.split(".")[1],
        lambda t: "garbage",
        lambda t: "",
    ],
)
def test_a_tampered_token_is_rejected(mangle: object) -> None:
    token = tokens.sign(KEY, "page", {"customer_id": "c-1"}, after="o-9")

    with pytest.raises(InvalidArgumentError) as raised:
        tokens.verify(KEY, mangle(token), "page", {"customer_id": "c-1"}, "page_token")  # type: ignore[operator]
    assert raised.value.violations[0].field == "page_token"


def test_a_token_is_bound_to_its_filter_its_kind_and_its_key() -> None:
    token = tokens.sign(KEY, "page", {"customer_id": "c-1"}, after="o-9")

    for key, kind, filter_ in ((KEY, "page", {"customer_id": "c-2"}), (KEY, "resume", {"customer_id": "c-1"}),
                               (b"x" * 32, "page", {"customer_id": "c-1"})):
        with pytest.raises(InvalidArgumentError):
            tokens.verify(key, token, kind, filter_, "page_token")

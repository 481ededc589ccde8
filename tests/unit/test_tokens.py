"""Page, resume and consistency tokens: round trip, and rejection when tampered, forged or reused
elsewhere (another filter, kind, key or tenant)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvalidArgumentError
from server.platform import tokens

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


WRITE = tokens.ConsistencyToken("order", "o-1", 3)


@given(st.sampled_from(["order", "customer", "product"]),
       st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", fullmatch=True), st.integers(1, tokens.MAX_VERSION),
       st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
def test_a_consistency_token_verifies_for_its_tenant_to_the_write_it_names(
        kind: str, aggregate_id: str, version: int, tenant_id: str) -> None:
    write = tokens.ConsistencyToken(kind, aggregate_id, version)
    assert tokens.verify_consistency(KEY, tenant_id, tokens.sign_consistency(KEY, tenant_id, write)) == write


def test_a_consistency_token_stays_short() -> None:
    """It is in every command response: the write, and a 128-bit MAC, no tenant, no JSON."""
    assert len(tokens.sign_consistency(KEY, "t" * 64, WRITE)) <= 40


def _unsigned(body: bytes) -> str:
    """A token as a caller could make one up: a body of its choosing, any MAC."""
    return tokens._b64(body) + "." + tokens._b64(b"\0" * 16)


@pytest.mark.parametrize("text", [
    "", "!!!", "garbage", "a.b.c", "MXxvcmRlcnxvLTF8MQ",  # not tokens; the last the unsigned format of before
    _unsigned(f"order|o-1|{2**63 - 1}".encode()),  # the longest wait a forger could ask for
    _unsigned(b"order|o-1|1"),
])
def test_a_consistency_token_not_signed_by_this_key_is_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        tokens.verify_consistency(KEY, "t", text)
    assert [v.field for v in caught.value.violations] == ["consistency_token"]


def test_a_consistency_token_is_bound_to_its_tenant_and_key_and_cannot_be_edited() -> None:
    token = tokens.sign_consistency(KEY, "t-a", WRITE)
    body, mac = token.split(".")
    edited = tokens._b64(b"order|o-1|" + str(2**63 - 1).encode()) + "." + mac
    refusals = []
    for key, tenant_id, text in ((KEY, "t-b", token), (b"x" * 32, "t-a", token), (KEY, "t-a", edited),
                                 (KEY, "t-a", body + "." + mac[:-2])):
        with pytest.raises(InvalidArgumentError) as caught:
            tokens.verify_consistency(key, tenant_id, text)
        refusals.append(caught.value.violations[0].description)
    # Another tenant's token is refused exactly like a forged one: nothing about it is revealed.
    assert len(set(refusals)) == 1


def test_a_page_token_is_never_a_consistency_token_nor_the_other_way_round() -> None:
    page = tokens.sign(KEY, "page", {"tenant_id": "t"}, after="o-1")
    with pytest.raises(InvalidArgumentError):
        tokens.verify_consistency(KEY, "t", page)
    with pytest.raises(InvalidArgumentError):
        tokens.verify(KEY, tokens.sign_consistency(KEY, "t", WRITE), "page", {"tenant_id": "t"}, "page_token")

"""Wire frames round-trip, and garbage is refused with a typed decode error."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import protocol as P

ids = st.text(min_size=1, max_size=40)
opt = st.none() | st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(producer=ids, pseq=st.integers(1, 2**62), stype=ids, record=st.binary(max_size=2048),
       version=opt, rid=opt, user=opt, session=opt,
       tags=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_record_frame_round_trips(producer: str, pseq: int, stype: str, record: bytes, version: str | None,
                                  rid: str | None, user: str | None, session: str | None,
                                  tags: dict[str, str] | None) -> None:
    """Every record frame decodes to exactly what was encoded."""
    frame = P.Record(producer, pseq, stype, record, version, rid, user, session, None, None, tags)
    assert P.decode_record(P.encode(frame)) == frame


@settings(max_examples=100, deadline=None)
@given(watermark=st.integers(0, 2**62),
       rejections=st.lists(st.tuples(st.integers(1, 2**40), ids, ids, st.text(max_size=80)), max_size=5))
def test_control_frames_round_trip(watermark: int, rejections: list[tuple[int, str, str, str]]) -> None:
    """Control frames decode to the same tagged frame."""
    for frame in (P.Ack(7, watermark, rejections), P.Nack(7, watermark), P.Welcome(7, watermark, watermark + 1),
                  P.Hello("p1", watermark, 12, "host"), P.Ping("p1"), P.StatsRequest(), P.StatsReply(b"{}")):
        assert P.decode_control(P.encode(frame)) == frame


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=256))
def test_garbage_is_a_decode_error(garbage: bytes) -> None:
    """Arbitrary bytes either decode to a valid frame or raise msgspec's typed errors."""
    for decode in (P.decode_record, P.decode_control):
        try:
            decode(garbage)
        except (msgspec.DecodeError, msgspec.ValidationError):
            pass


def test_record_frame_is_not_a_control_frame() -> None:
    """A record frame sent to the control socket is refused, not misread."""
    data = P.encode(P.Record("p", 1, "a3cp_message", b"{}"))
    with pytest.raises(msgspec.ValidationError):
        P.decode_control(data)

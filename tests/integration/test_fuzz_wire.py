"""Hostile input on the wire (issue 6, item 5): a live recorder fed random and garbled frames on
its ingress, well-formed record frames with fuzzed fields, and garbage on its control socket stays
up, counts every bad frame, quarantines every typed input it refuses with a reason, stores the
valid ones, writes nothing outside its data root, and then serves a normal Client.

Run with ``pytest -s`` to see how many inputs were fuzzed (``RECORDER_FUZZ_SCALE=10`` for ten times
as many). A Hello whose ``acked`` is 2**64 - 1 kills the recorder (see the strict xfail at the end);
the fuzz run holds back any control frame that decodes to a Hello that large.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recorder import protocol as P
from recorder.client import Client
from recorder.schema.config import load_config
from recorder.testing import sample_audit, sample_message, sample_raw_action

from .service_support import Proc, Procs, assert_verified, journal_lines, on_disk, stats, wait_for

CONFIG = load_config(None)
MAX_MSG = CONFIG.recorder.max_message_bytes
MAX_RECORD = {name: tc.max_record_bytes for name, tc in CONFIG.types.items()}
PRODUCER = re.compile(r"[A-Za-z0-9._-]{1,64}")  # what the recorder takes as a producer id
ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
SECRET = "U0VDUkVUV0lSRUZVWlo"  # a raw frame's base64 payload: never in any file
SCALE = float(os.environ.get("RECORDER_FUZZ_SCALE", "1"))
RUN = settings(deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=list(HealthCheck))
HELLO_SAFE = 2**63  # Hellos with a larger `acked` are held back (the overflow bug)


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


# -- what the recorder must count ------------------------------------------------------------
def decoded(frame: bytes) -> P.Record | None:
    try:
        return P.decode_record(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def bad_control(frame: bytes) -> bool:
    """Whether the recorder counts this one-part control frame as bad."""
    try:
        msg = P.decode_control(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return True
    if isinstance(msg, P.Hello) and not 0 <= msg.acked < 2**62:
        return True  # out of the sequence range the recorder accepts
    return isinstance(msg, (P.Hello, P.Ping)) and not PRODUCER.fullmatch(msg.producer)


def overflowing_hello(frame: bytes) -> bool:
    try:
        msg = P.decode_control(frame)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return False
    return isinstance(msg, P.Hello) and msg.acked >= HELLO_SAFE


@dataclass
class Wire:
    """Raw sockets to one live recorder, and the tally of what was sent."""

    proc: Proc
    root: Path
    ctx: zmq.Context[Any]
    push: zmq.Socket[Any] = field(init=False)
    dealer: zmq.Socket[Any] = field(init=False)
    sent: Counter[str] = field(default_factory=Counter)
    expect_bad: int = 0
    received: int = 0  # ingress frames the recorder will read (not dropped by MAXMSGSIZE)
    stored: dict[tuple[str, int], str] = field(default_factory=dict)  # (producer, pseq) -> record_id
    quarantined: dict[tuple[str, int], tuple[str, str | None]] = field(default_factory=dict)
    bad_producers: list[tuple[str, int]] = field(default_factory=list)  # (schema_type[:64], pseq)
    unknown_producer: int = 0
    held_back: int = 0

    def __post_init__(self) -> None:
        ready = self.proc.first_ready
        self.push = self.socket(zmq.PUSH, ready["ingress"])
        self.dealer = self.socket(zmq.DEALER, ready["control"])

    def socket(self, kind: int, endpoint: str) -> zmq.Socket[Any]:
        s: zmq.Socket[Any] = self.ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.SNDTIMEO, 5000)
        s.setsockopt(zmq.RCVTIMEO, 5000)
        s.connect(endpoint)
        return s

    def alive(self) -> None:
        assert self.proc.returncode is None, f"the recorder died\n{self.proc.describe()}"

    def ingress(self, frame: bytes, kind: str) -> None:
        self.push.send(frame)
        self.sent[kind] += 1
        self.received += 1
        r = decoded(frame)
        if r is None:  # not a Record: counted, quarantined as schema type "?"
            self.expect_bad += 1
        elif not PRODUCER.fullmatch(r.producer) or not 0 < r.pseq < 2**62:  # counted, quarantined under "?"
            self.expect_bad += 1
            self.bad_producers.append((r.schema_type[:64], r.pseq))

    def control(self, parts: list[bytes], kind: str) -> None:
        if len(parts) == 1 and overflowing_hello(parts[0]):
            self.held_back += 1
            return
        self.dealer.send_multipart(parts)
        self.sent[kind] += 1
        # a control message of any other number of parts is dropped uncounted
        self.expect_bad += len(parts) == 1 and bad_control(parts[0])

    def counters(self) -> dict[str, Any]:
        """The recorder's stats over the control socket (fast; the CLI is checked once at the end)."""
        s = self.socket(zmq.DEALER, self.proc.first_ready["control"])
        try:
            s.send(P.encode(P.StatsRequest()))
            while True:
                reply = P.decode_control(s.recv())
                if isinstance(reply, P.StatsReply):
                    out: dict[str, Any] = json.loads(reply.body)
                    return out
        finally:
            s.close(linger=0)

    def total(self) -> int:
        return sum(self.sent.values())


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def tree(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, path)] = stat.S_IFMT(os.lstat(p).st_mode)
    return out


ALLOWED = [
    re.compile(r"_recorder/(audit|quarantine|catalog)\.jsonl(\.head)?|_recorder/lock"),
    re.compile(r"_recorder/state/(seq|producers\.json|active-[a-z0-9_]+\.json)"),  # producers.json: the durable index
    re.compile(rf"logs/users/(?P<u>{ID})/sessions/(?P<s>{ID})/(a3cp_message|audit_event|feedback_log)\.jsonl(\.head)?"),
    re.compile(rf"logs/users/(?P<u>{ID})/base/\d{{4}}-\d{{2}}-\d{{2}}\.jsonl(\.head)?"),
    re.compile(rf"data/users/(?P<u>{ID})/sessions/(?P<s>{ID})/raw_action_\d{{4}}\.(jsonl|jsonl\.head|parquet|manifest\.json)"),
]


def check_root(root: Path, users: set[str], sessions: set[str]) -> None:
    """Only expected names in the data root, user and session parts of stored records only, no secret."""
    entries = tree(root)
    files = [rel for rel, mode in entries.items() if mode != stat.S_IFDIR]
    for rel in files:
        assert entries[rel] == stat.S_IFREG, f"{rel} is not a regular file"
        m = next((p.fullmatch(rel) for p in ALLOWED if p.fullmatch(rel)), None)
        assert m is not None, f"unexpected path in the data root: {rel!r}"
        g = m.groupdict()
        assert g.get("u") in (None, *users), f"{rel}: no stored record has this user"
        assert g.get("s") in (None, *sessions, "none"), f"{rel}: no stored record has this session"
        assert SECRET.encode() not in (root / rel).read_bytes(), f"denied content reached {rel}"
    for rel, mode in entries.items():
        if mode == stat.S_IFDIR:
            assert any(f.startswith(rel + "/") for f in files) or rel == "_recorder/state", f"unexpected dir {rel!r}"


# -- frames ---------------------------------------------------------------------------------------
def record_frame(producer: str, pseq: int, schema_type: str, record: bytes, **meta: Any) -> bytes:
    return P.encode(P.Record(producer, pseq, schema_type, record, **meta))


BASE_FRAME = record_frame("ga-base", 1, "a3cp_message", json.dumps(sample_message()).encode())
CONTROL_FRAMES = [P.encode(P.Hello("ctl-a", 0, 1, "host")), P.encode(P.Ping("ctl-a")), P.encode(P.StatsRequest())]


@st.composite
def garbled(draw: st.DrawFn, base: bytes) -> bytes:
    """``base`` with a few bytes replaced, inserted or deleted."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["set", "insert", "delete", "flip"]))
        if op == "set":
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and len(data) > 1:
            del data[at]
        else:
            data[at] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


MSGPACK_ANY = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def structured(tags: list[str]) -> st.SearchStrategy[bytes]:
    """msgpack arrays that start with a real tag but hold the wrong number or kinds of fields."""
    return st.builds(lambda tag, rest: msgspec.msgpack.encode([tag, *rest]),
                     st.sampled_from(tags), st.lists(MSGPACK_ANY, max_size=13))


def ingress_junk(base: bytes) -> st.SearchStrategy[tuple[str, bytes]]:
    return st.one_of(
        st.tuples(st.just("random bytes"), st.binary(max_size=300)),
        st.tuples(st.just("truncated"), st.integers(0, len(base) - 1).map(lambda n: base[:n])),
        st.tuples(st.just("garbled"), garbled(base)),
        st.tuples(st.just("msgpack junk"), MSGPACK_ANY.map(msgspec.msgpack.encode)),
        st.tuples(st.just("wrong fields"), structured(["r", "hello", "ack"])),
    )


# -- records with a known fate --------------------------------------------------------------
def padded(record: dict[str, Any], size: int) -> bytes:
    """The record's JSON padded with blanks to exactly ``size`` bytes."""
    raw = json.dumps(record, separators=(",", ":")).encode()
    assert len(raw) <= size
    return b"{" + b" " * (size - len(raw)) + raw[1:]


def deep(n: int) -> bytes:
    return b"[" * n + b"0" + b"]" * n


def invalid_records(user: str, session: str) -> list[tuple[str, str, bytes, dict[str, Any], str | None]]:
    """(what, schema type, record bytes, frame metadata, expected code or None for any)."""
    m = sample_message(user, session)

    def js(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    no_session = {k: v for k, v in m.items() if k != "session_id"}
    return [
        ("not JSON", "a3cp_message", b"this is not json", {}, "invalid"),
        ("bad UTF-8", "a3cp_message", b'{"a":"\xff\xfe"}', {}, "invalid"),
        ("empty", "audit_event", b"", {}, "invalid"),
        ("JSON array", "a3cp_message", b"[1,2,3]", {}, "invalid"),
        ("JSON string", "feedback_log", b'"record"', {}, "invalid"),
        ("JSON null", "base", b"null", {}, "invalid"),
        ("NaN", "a3cp_message", js(m).replace(b'"unknown": ', b'"unknown": NaN, "x": '), {}, "invalid"),
        ("lone surrogate", "a3cp_message", js(dict(m, modality="\x00S")).replace(b"\\u0000S", b"\\ud800"), {}, "invalid"),
        ("deep nesting", "a3cp_message", js(dict(m, annotation={"d": "\x00D"})).replace(b'"\\u0000D"', deep(5000)), {},
         "invalid"),
        ("10**400 probability", "a3cp_message",
         js(dict(m, classifier_output={"unknown": "\x00N"})).replace(b'"\\u0000N"', str(10**400).encode()), {}, "invalid"),
        ("no unknown class", "a3cp_message", js(dict(m, classifier_output={"help": 1.0})), {}, "invalid"),
        ("path user_id", "a3cp_message", js(dict(m, user_id="../../etc")), {}, "unsafe_identifier"),
        ("NUL session_id", "audit_event", js(dict(sample_audit(user, session), session_id="a\x00b")), {},
         "unsafe_identifier"),
        ("path session_id as metadata", "a3cp_message", js(no_session), {"session_id": "../x"}, "unsafe_identifier"),
        # metadata ids go through the model too: its 128-character bound speaks first
        ("long session_id as metadata", "a3cp_message", js(no_session), {"session_id": "s" * 300}, "invalid"),
        ("metadata disagrees", "a3cp_message", js(m), {"user_id": "someone_else"}, "invalid"),
        ("denied field", "a3cp_message", js(dict(m, annotation={"x": {"frame_data": SECRET}})), {}, "denied_field"),
        ("data: URL", "raw_action", js(dict(sample_raw_action(user, session), modality="DATA:Image/png;base64," + SECRET)),
         {}, "denied_field"),
        ("oversize, under max_message_bytes", "a3cp_message", padded(m, MAX_MSG - 64), {}, "too_large"),
        ("oversize, over max_message_bytes", "a3cp_message", padded(m, MAX_MSG + 1), {}, "too_large"),
        ("raw_action over max_message_bytes", "raw_action", padded(sample_raw_action(user, session), MAX_MSG + 1), {},
         "too_large"),
        ("unknown type", "no_such_type", js(m), {}, "unknown_schema"),
        ("path-like type", "../../logs", js(m), {}, "unknown_schema"),
        ("long type", "t" * 5000, js(m), {}, "unknown_schema"),
    ]


def valid_records(user: str, session: str, i: int) -> list[tuple[str, str, bytes, dict[str, Any]]]:
    """(what, schema type, record bytes, frame metadata) of records that must be stored."""
    m = sample_message(user, session, i)
    return [
        ("message", "a3cp_message", json.dumps(m).encode(), {}),
        ("message with line breaks", "a3cp_message",
         json.dumps(dict(m, annotation={"n": "a\u2028b\u2029c\u0085d\ne"}), ensure_ascii=False).encode(), {}),
        ("message, ids as metadata", "a3cp_message",
         json.dumps({k: v for k, v in m.items() if k not in ("record_id", "user_id", "session_id")}).encode(),
         {"record_id": m["record_id"], "user_id": user, "session_id": session, "tags": {"k\u2028": "v\n"}}),
        ("audit", "audit_event", json.dumps(sample_audit(user, session, i=i)).encode(), {}),
        ("raw_action", "raw_action", json.dumps(sample_raw_action(user, session, i)).encode(), {}),
        ("raw_action at max_message_bytes", "raw_action", padded(sample_raw_action(user, session, i), MAX_MSG), {}),
        ("huge integers", "a3cp_message",
         json.dumps(dict(m, annotation={"n": "\x00N"})).replace('"\\u0000N"', f"[{10**400}, {2**80}]").encode(), {}),
    ]


ODD_PRODUCERS = ["", "../x", "a/b", "/", "x" * 65, "\x00", "\u00e9t\u00e9", " ", "a b", "p\n", "..\\x", "p" * 5000]
CORNER_PRODUCERS = ["..", ".", "-", "." * 64, "_", "A" * 64]  # plain names to the recorder: never paths
ODD_PSEQ = [0, -1, 2, 7, 2**63 - 1, 2**63, 2**64 - 1, -(2**63)]


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# -- the test -------------------------------------------------------------------------------------
@pytest.mark.timeout(90)
def test_hostile_frames_leave_the_recorder_up_counting_and_quarantining(
        procs: Procs, data_root: Path, tmp_path: Path, zctx: zmq.Context[Any]) -> None:
    """Random, truncated and garbled ingress frames, record frames with fuzzed fields and control-socket
    garbage: the recorder stays up, counts each bad frame, quarantines each refused typed record with
    a reason, stores each valid one, writes nothing outside its data root, and then serves a Client."""
    started = time.monotonic()
    proc = procs.recorder(data_root)
    w = Wire(proc, data_root, zctx)
    outside = {k: v for k, v in tree(tmp_path).items() if k != "data" and not k.startswith("data/")}
    run_dir = Path(proc.first_ready["ingress"][len("ipc://"):]).parent
    base = w.counters()

    # (a) random bytes, truncated and garbled msgpack straight into the ingress PULL socket
    @settings(RUN, max_examples=examples(1500))
    @given(ingress_junk(BASE_FRAME))
    def junk(case: tuple[str, bytes]) -> None:
        w.ingress(case[1], f"ingress {case[0]}")

    junk()
    w.alive()

    # (b) well-formed Record frames whose fields are fuzzed: every listed case once, then at random
    def send_valid(producer: str, case: tuple[str, str, bytes, dict[str, Any]]) -> None:
        what, stype, raw, meta = case
        w.ingress(record_frame(producer, 1, stype, raw, **meta), f"record: valid {what}")
        w.stored[(producer, 1)] = meta.get("record_id") or json.loads(raw)["record_id"]

    def send_invalid(producer: str, case: tuple[str, str, bytes, dict[str, Any], str | None]) -> None:
        what, stype, raw, meta, code = case
        w.ingress(record_frame(producer, 1, stype, raw, **meta), f"record: {what}")
        w.quarantined[(producer, 1)] = (stype[:128], code)

    for valid in valid_records("user02", "sess02", 1):
        send_valid(fresh("fz"), valid)
    for invalid in invalid_records("user03", "sess03"):
        send_invalid(fresh("fz"), invalid)
    for producer in CORNER_PRODUCERS:
        what, stype, raw, meta = valid_records("user01", "sess01", 0)[0]
        meta = dict(meta, record_id=str(uuid.uuid4()))
        rec = json.loads(raw)
        rec["record_id"] = meta["record_id"]
        w.ingress(record_frame(producer, 1, stype, json.dumps(rec).encode()), "record: corner producer id")
        w.stored[(producer, 1)] = meta["record_id"]

    @settings(RUN, max_examples=examples(600))
    @given(st.data())
    def records(d: st.DataObject) -> None:
        user = d.draw(st.from_regex(ID, fullmatch=True), label="user")
        session = d.draw(st.from_regex(ID, fullmatch=True), label="session")
        kind = d.draw(st.sampled_from(["valid", "invalid", "odd producer", "odd pseq", "random record bytes"]))
        producer = fresh("fz")
        if kind == "valid":
            send_valid(producer, d.draw(st.sampled_from(valid_records(user, session, d.draw(st.integers(0, 99))))))
        elif kind == "invalid":
            send_invalid(producer, d.draw(st.sampled_from(invalid_records(user, session))))
        elif kind == "random record bytes":
            stype = d.draw(st.sampled_from(sorted(MAX_RECORD)))
            raw = d.draw(st.binary(max_size=200) | st.text(max_size=100).map(str.encode))
            w.ingress(record_frame(producer, 1, stype, raw), "record: random record bytes")
            w.quarantined[(producer, 1)] = (stype, None)
        elif kind == "odd producer":
            odd = d.draw(st.sampled_from(ODD_PRODUCERS) | st.text(max_size=80).filter(lambda t: not PRODUCER.fullmatch(t)))
            stype = d.draw(st.sampled_from(sorted(MAX_RECORD) + ["nope", "../x"]))
            pseq = d.draw(st.sampled_from([1, *ODD_PSEQ]))
            w.ingress(record_frame(odd, pseq, stype, json.dumps(sample_message(user, session)).encode()),
                      "record: odd producer id")
        else:
            pseq = d.draw(st.sampled_from(ODD_PSEQ) | st.integers(-(2**63), 2**64 - 1).filter(lambda p: p != 1))
            w.ingress(record_frame(producer, pseq, "a3cp_message", json.dumps(sample_message(user, session)).encode()),
                      "record: odd pseq from an unknown producer")
            w.unknown_producer += 0 < pseq < 2**62  # outside that range: a bad frame instead

    records()
    w.alive()
    # a known producer resending and skipping ahead: duplicates and gaps, never stored twice
    known = next(iter(w.stored))[0]
    for pseq in (1, 1, 5, 2**64 - 1, -5):
        w.ingress(record_frame(known, pseq, "a3cp_message", json.dumps(sample_message()).encode()),
                  "record: duplicate or gap")

    # (c) garbage on the control ROUTER socket through a DEALER
    @settings(RUN, max_examples=examples(800))
    @given(st.one_of(
        st.tuples(st.just("control random bytes"), st.binary(max_size=300).map(lambda b: [b])),
        st.tuples(st.just("control truncated"), st.sampled_from(CONTROL_FRAMES).flatmap(
            lambda f: st.integers(0, len(f) - 1).map(lambda n: [f[:n]]))),
        st.tuples(st.just("control garbled"), st.sampled_from(CONTROL_FRAMES).flatmap(garbled).map(lambda b: [b])),
        st.tuples(st.just("control wrong fields"), structured(["hello", "ping", "stats?", "welcome", "ack", "r"])
                  .map(lambda b: [b])),
        st.tuples(st.just("control odd producer"), st.tuples(
            st.sampled_from(ODD_PRODUCERS) | st.text(max_size=80).filter(lambda t: not PRODUCER.fullmatch(t)),
            st.integers(-(2**63), HELLO_SAFE - 1), st.booleans(),
        ).map(lambda t: [P.encode(P.Hello(t[0], t[1]) if t[2] else P.Ping(t[0]))])),
        st.tuples(st.just("control hello, odd acked"), st.integers(-(2**63), HELLO_SAFE - 1).map(
            lambda a: [P.encode(P.Hello(fresh("ctl"), a))])),
        st.tuples(st.just("control multipart"), st.lists(st.binary(max_size=40), min_size=2, max_size=5)),
    ))
    def control(case: tuple[str, list[bytes]]) -> None:
        w.control(case[1], case[0])

    control()
    w.alive()
    # frames over the sockets' size guard are cut off by ZeroMQ (the connection drops, nothing is read)
    big = w.socket(zmq.PUSH, proc.first_ready["ingress"])
    big.send(record_frame(fresh("fz"), 1, "a3cp_message", b"{" + b" " * (MAX_MSG + 8192) + b"}"))
    w.sent["ingress frame over max_message_bytes + 4096"] += 1
    w.control([b"\x00" * 70_000], "control frame over 64 KiB")
    w.expect_bad -= 1  # that one is dropped by ZeroMQ before the recorder reads it

    # everything sent has been read and settled
    def settled() -> bool:
        c = w.counters()
        q = {(e["producer"], e["pseq"]) for e in journal_lines(data_root / "_recorder" / "quarantine.jsonl")[1:]}
        disk = {(e["producer"], e["pseq"]) for e in on_disk(data_root)}
        return (c["received"] - base["received"] >= w.received
                and set(w.quarantined) <= q and set(w.stored) <= disk)

    wait_for(settled, 30, "every fuzzed frame read, stored or quarantined", state=lambda: w.counters())
    w.alive()
    big.close(linger=0)

    # a normal producer still records and flushes
    with Client(data_root=str(data_root), user_id="user01", session_id="sess01") as client:
        client.record(sample_message("user01", "sess01", 4242), schema_type="a3cp_message")
        client.flush(timeout=15)
    w.alive()

    counters = stats(data_root)  # the CLI, as a user would ask
    assert counters["bad_frames"] - base["bad_frames"] == w.expect_bad, (counters, w.expect_bad)
    assert counters["unknown_producer"] - base["unknown_producer"] >= w.unknown_producer
    assert counters["gaps"] >= 1 and counters["duplicates"] >= 1

    entries = journal_lines(data_root / "_recorder" / "quarantine.jsonl")[1:]
    assert counters["quarantined"] == len(entries) and counters["quarantine_dropped"] == 0
    by_key = {(e["producer"], e["pseq"]): e for e in entries}
    for key, (stype, code) in w.quarantined.items():
        e = by_key[key]
        assert e["schema_type"] == stype and e["origin"] == "wire", e
        assert e["reason"] and e["field"], e
        if code is not None:
            assert e["code"] == code, e
    odd = Counter((e["schema_type"], e["pseq"]) for e in entries if e["producer"] == "?" and e["field"] == "producer")
    assert odd == Counter(w.bad_producers)
    unparsable = [e for e in entries if e["schema_type"] == "?"]
    assert all(e["reason"].startswith("?: field '$': not a record frame") for e in unparsable)

    envelopes = on_disk(data_root)
    got = Counter((e["producer"], e["pseq"]) for e in envelopes)
    for key, record_id in w.stored.items():
        assert got[key] == 1, f"{key} stored {got[key]} times"
    ids = {(e["producer"], e["pseq"]): e["record_id"] for e in envelopes}
    assert all(ids[k] == v for k, v in w.stored.items())
    assert any(e["record"].get("record_id") == sample_message("user01", "sess01", 4242)["record_id"] for e in envelopes)
    assert not set(w.quarantined) & set(got), "a refused record is on disk"

    # nothing beside the data root, only the ipc endpoints in the run dir, a clean stop and a clean chain
    assert {k: v for k, v in tree(tmp_path).items() if k != "data" and not k.startswith("data/")} == outside
    assert set(os.listdir(run_dir)) <= {"ingress", "control", "lock"}
    proc.signal(15)
    assert proc.wait(30) == 0, proc.describe()
    check_root(data_root, {e["user_id"] for e in envelopes}, {e["session_id"] for e in envelopes if e["session_id"]})
    assert_verified(data_root)
    elapsed = time.monotonic() - started
    print(f"\n[fuzz] wire: {w.total()} inputs fuzzed in {elapsed:.1f} s "
          f"({sum(n for k, n in w.sent.items() if not k.startswith('control'))} ingress frames, "
          f"{sum(n for k, n in w.sent.items() if k.startswith('control'))} control messages; "
          f"{w.expect_bad} bad frames counted, {len(entries)} quarantined, {len(w.stored)} known-valid stored, "
          f"{w.held_back} overflowing Hellos held back; recorder producers table: {counters['producers']})")
    for kind, n in sorted(w.sent.items()):
        print(f"[fuzz]   {n:5d}  {kind}")


@pytest.mark.timeout(60)
def test_hello_with_the_largest_acked_does_not_kill_the_recorder(
        procs: Procs, data_root: Path, zctx: zmq.Context[Any]) -> None:
    """One control frame, Hello(acked=2**64 - 1), leaves the recorder up and answering."""
    proc = procs.recorder(data_root)
    w = Wire(proc, data_root, zctx)
    w.dealer.send(P.encode(P.Hello("overflow", 2**64 - 1)))
    try:
        answer: dict[str, Any] | None = w.counters()  # read after the Hello: only a live recorder answers
    except zmq.Again:
        answer = None
    w.alive()
    w.push.close(linger=0)
    w.dealer.close(linger=0)
    # refused as a bad frame (sequences live in 1..2**62), and the recorder answers on
    assert answer is not None and answer["producers"] == 0 and answer["bad_frames"] >= 1

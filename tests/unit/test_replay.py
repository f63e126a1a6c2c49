"""Replay: recorder order across types, the schedule in simulated time, seeking by the catalog, the CLI."""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_reader import populate

from recorder import CorruptionError, RecorderError, Store, read, replay
from recorder._env import iso_ns
from recorder.cli import main
from recorder.schema.config import parse_config
from recorder.reading.replay import ScheduleStats, SimulatedClock, parse_time
from recorder.testing import sample_audit, sample_message, sample_raw_action, timestamp
from recorder.protocol import Record
from recorder.schema.validation import encode_record
from recorder.storage.writer import Entry

T0 = parse_time("2026-03-01T09:00:00Z", "t0") or 0
MS = 1_000_000

SEGMENTED = """
[recorder]
min_free_bytes = 0
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "seg/{schema_type}_{segment:04d}.jsonl"
durability = "os"
rotate_records = 20
[types.audit_event]
model = "recorder.a3cp:AuditEvent"
path = "logs/{user_id}/{schema_type}.jsonl"
durability = "os"
"""


def write_at(store: Store, offsets_ns: list[int], stamps: list[str] | None = None, batch: int = 1) -> None:
    """Record one a3cp_message per offset, received at T0 + offset (the writer's own path, clock given)."""
    w = store.writers["a3cp_message"]
    entries = []
    for i, off in enumerate(offsets_ns):
        rec = sample_message("u1", "s1", i)
        if stamps is not None:
            rec["timestamp"] = stamps[i]
        acc = store.check(Record("inproc", 0, "a3cp_message", encode_record(rec)))
        entries.append(Entry(acc, store.seq.take(), T0 + off, "p1", i + 1))
        if len(entries) == batch:
            w.write(entries)
            entries = []
    if entries:
        w.write(entries)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several types, users and sessions, with a session sealed into a Parquet segment (read only)."""
    root = tmp_path_factory.mktemp("mixed") / "data"
    populate(root)
    with Store(None, data_root=root) as s:
        s.record(sample_message("mia02", "s9", 50), schema_type="a3cp_message")
        s.record(sample_raw_action("mia02", "s9", 51), schema_type="raw_action")
        s.end_session("mia02", "s9")  # its raw_action segment becomes Parquet
        s.sealer.wait_idle(30)
    assert list(root.rglob("*.parquet"))
    return root


def test_replay_order_equals_read_order(mixed: Path) -> None:
    """replay() yields exactly what read() yields, in the same order, across types, journals and Parquet."""
    got = list(replay(mixed, speed=None))
    assert got == list(read(mixed))
    assert len({e["schema_type"] for e in got}) == 4


@pytest.mark.parametrize("filters", [{"types": ["a3cp_message", "raw_action"]}, {"types": "audit_event"},
                                     {"user": "mia02"}, {"session": "s9", "types": ["raw_action"]}],
                         ids=["two-types", "one-type", "user", "session-type"])
def test_replay_filters_keep_read_order(mixed: Path, filters: dict[str, Any]) -> None:
    """Type, user and session filters keep exactly the matching records of read(), in read() order."""
    types = filters.get("types")
    chosen = {types} if isinstance(types, str) else set(types or [])
    want = [e for e in read(mixed) if (not chosen or e["schema_type"] in chosen)
            and e["user_id"] == filters.get("user", e["user_id"])
            and e["session_id"] == filters.get("session", e["session_id"])]
    assert want
    assert list(replay(mixed, speed=None, **filters)) == want


@pytest.mark.parametrize("hashing", ["sha256", "none"])
def test_replay_leaves_out_what_no_commit_mark_covers(tmp_path: Path, hashing: str) -> None:
    """Lines after the last commit mark (an unfinished batch, a torn line) are never played, as read() skips them."""
    cfg = SEGMENTED.replace('durability = "os"', f'durability = "os"\nhash = "{hashing}"')
    with Store(parse_config(cfg, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, [i * MS for i in range(7)], batch=3)
    journal = tmp_path / "d" / "seg" / "a3cp_message_0000.jsonl"
    last = journal.read_bytes().splitlines(keepends=True)[-1]
    assert b',"commit":true' in last
    with open(journal, "ab") as f:
        f.write(last.replace(b',"commit":true', b"").replace(b'{"seq":', b'{"seq":9', 1))  # batch without its end
        f.write(last[:40])  # torn
    got = list(replay(tmp_path / "d", speed=None))
    assert len(got) == 7 and got == list(read(tmp_path / "d"))


@pytest.mark.parametrize("line", [2, 4, 7], ids=["first", "middle", "last"])
def test_replay_reports_a_damaged_line_as_read_does(tmp_path: Path, line: int) -> None:
    """A record line that is not JSON raises CorruptionError naming the file and line, as read(strict=True) does."""
    with Store(parse_config(SEGMENTED, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, [i * MS for i in range(6)], batch=2)
    journal = tmp_path / "d" / "seg" / "a3cp_message_0000.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[line - 1] = b"{not json" + lines[line - 1][9:]
    journal.write_bytes(b"".join(lines))
    with pytest.raises(CorruptionError) as read_err:
        list(read(tmp_path / "d", strict=True))
    with pytest.raises(CorruptionError) as replay_err:
        list(replay(tmp_path / "d", speed=None))
    assert (replay_err.value.path, replay_err.value.line) == (read_err.value.path, read_err.value.line) == (
        str(journal), line)


@pytest.mark.parametrize("speed", [1, 10])
def test_simulated_replay_emits_at_the_intended_offsets(tmp_path: Path, speed: float) -> None:
    """In simulated time every record leaves exactly at its receive offset from the first, divided by speed."""
    offsets = [0, 10 * MS, 10 * MS, 17 * MS, 250 * MS, 250_010_000, 1_000 * MS, 3_600_000 * MS]
    with Store(parse_config(SEGMENTED, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, offsets, batch=3)
    clock = SimulatedClock(start_ns=5_000 * MS)
    rp = replay(tmp_path / "d", speed=speed, clock=clock)
    emitted = [clock.now_ns() - 5_000 * MS for _ in rp]
    assert emitted == [off // speed for off in offsets]
    assert rp.stats.count == len(offsets) and rp.stats.max_ns == 0


def test_late_records_count_as_schedule_error_without_drift(tmp_path: Path) -> None:
    """Work that makes a record late shows as its schedule error; later records keep their own times."""
    with Store(parse_config(SEGMENTED, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, [0, 10 * MS, 20 * MS, 30 * MS])
    clock = SimulatedClock()
    rp = replay(tmp_path / "d", clock=clock)
    emitted = []
    for i, _e in enumerate(rp):
        emitted.append(clock.now_ns())
        if i == 1:
            clock.advance(15 * MS)  # the consumer took 15 ms over record 2
    assert emitted == [0, 10 * MS, 25 * MS, 30 * MS]
    assert sorted(rp.stats.samples) == [0, 0, 0, 5 * MS]


def test_replay_by_timestamp_never_goes_back(tmp_path: Path) -> None:
    """With by="timestamp" the record's own time sets the pace; an earlier time than the last leaves at once."""
    stamps = [timestamp(0), timestamp(2), timestamp(1), timestamp(3.5)]
    with Store(parse_config(SEGMENTED, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, [0, 1, 2, 3], stamps=stamps)
    clock = SimulatedClock()
    emitted = [clock.now_ns() for _ in replay(tmp_path / "d", clock=clock, by="timestamp", speed=2)]
    assert emitted == [0, 1000 * MS, 1000 * MS, 1750 * MS]


def test_replay_at_max_speed_does_not_wait(tmp_path: Path) -> None:
    """speed=None yields everything without waiting on the clock."""
    with Store(parse_config(SEGMENTED, "<test>"), data_root=tmp_path / "d") as s:
        write_at(s, [0, 60_000 * MS, 120_000 * MS])
    clock = SimulatedClock()
    assert len(list(replay(tmp_path / "d", clock=clock, speed=None))) == 3
    assert clock.now_ns() == 0


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 sealed segments of 20 records, 10 ms apart (timestamps 1 s apart), and an open 41st segment (read only)."""
    root = tmp_path_factory.mktemp("long") / "long"
    n = 40 * 20 + 5
    with Store(parse_config(SEGMENTED, "<test>"), data_root=root) as s:
        write_at(s, [i * 10 * MS for i in range(n)], stamps=[timestamp(i) for i in range(n)], batch=20)
        s.sealer.wait_idle(60)
    assert len(list(root.rglob("*.manifest.json"))) == 40
    return root


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every file opened through open() from now on (pyarrow included: replay hands it file objects)."""
    seen: list[Path] = []
    real = builtins.open

    def spy(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, (str, Path)):
            seen.append(Path(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    yield seen


def _at(i: int, by: str) -> str:
    return timestamp(i) if by == "timestamp" else f"2026-03-01T09:00:{i // 100:02d}.{i % 100 * 10:03d}Z"


@pytest.mark.parametrize("by", ["received", "timestamp"])
def test_seek_opens_only_overlapping_segments(long_recording: Path, opened: list[Path], by: str) -> None:
    """Seeking to a window in the middle opens only the segments the manifests place in it (and the open one)."""
    since, until = _at(410, by), _at(455, by)
    lo, hi = parse_time(since, "since"), parse_time(until, "until")
    assert lo is not None and hi is not None
    overlapping = set()
    for mf in long_recording.rglob("*.manifest.json"):
        m = json.loads(mf.read_text())
        first, last = (parse_time(m[f"first_{by}"], "m"), parse_time(m[f"last_{by}"], "m"))
        assert first is not None and last is not None
        if last >= lo and first < hi:
            overlapping.add(long_recording / m["path"])
    open_segment = long_recording / "seg" / "a3cp_message_0040.jsonl"
    got = [e["record"]["capture_id"] for e in replay(long_recording, since=since, until=until, by=by, speed=None)]
    assert got == [sample_message("u1", "s1", i)["capture_id"] for i in range(410, 455)]
    data_opened = {p for p in opened if "_recorder" not in p.parts}
    assert overlapping == {long_recording / "seg" / f"a3cp_message_{k:04d}.jsonl" for k in (20, 21, 22)}
    assert data_opened == overlapping | {open_segment}


class CountingFile:
    """A binary file that counts the bytes read through it."""

    def __init__(self, f: Any, counts: dict[Path, int], path: Path) -> None:
        self.f, self.counts, self.path = f, counts, path

    def _count(self, data: bytes) -> bytes:
        self.counts[self.path] = self.counts.get(self.path, 0) + len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        return self._count(self.f.read(n))

    def readline(self) -> bytes:
        return self._count(self.f.readline())

    def __iter__(self) -> Iterator[bytes]:
        return (self._count(line) for line in self.f)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.f, name)


def test_seek_bisects_a_long_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeking by receive time into one long journal outside the catalog reads a small part of it."""
    root = tmp_path / "d"
    n = 4000
    with Store(parse_config(SEGMENTED, "<test>"), data_root=root) as s:
        acc = s.check(Record("inproc", 0, "audit_event", encode_record(sample_audit("u1", "s1"))))
        for k in range(0, n, 200):
            s.writers["audit_event"].write([Entry(acc, s.seq.take(), T0 + i * MS, "p1", i + 1)
                                            for i in range(k, k + 200)])
    journal = root / "logs" / "u1" / "audit_event.jsonl"
    assert journal.stat().st_size > 1_000_000
    counts: dict[Path, int] = {}
    real = builtins.open

    def counting_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = real(file, mode, *args, **kwargs)
        return CountingFile(f, counts, Path(file)) if str(file).endswith(".jsonl") and "b" in mode else f

    monkeypatch.setattr(builtins, "open", counting_open)
    got = [e["pseq"] for e in replay(root, since=iso_ns(T0 + 3000 * MS), until=iso_ns(T0 + 3010 * MS), speed=None)]
    assert got == list(range(3001, 3011))
    assert counts[journal] < journal.stat().st_size / 4
    counts.clear()
    assert list(replay(root, since=iso_ns(T0 + (n + 5) * MS), speed=None)) == []
    assert counts[journal] < journal.stat().st_size / 4  # it ends before since: not read at all


def test_seek_then_play_on_schedule(long_recording: Path) -> None:
    """After a seek the schedule starts at the first record of the window."""
    clock = SimulatedClock()
    emitted = [clock.now_ns() for _ in replay(long_recording, since=_at(700, "received"),
                                              until=_at(705, "received"), clock=clock)]
    assert emitted == [k * 10 * MS for k in range(5)]


@pytest.mark.parametrize(("kwargs", "name"), [({"speed": 0}, "speed"), ({"speed": -2.0}, "speed"),
                                             ({"by": "seq"}, "by"), ({"since": "yesterday"}, "since"),
                                             ({"until": "2026-13-01"}, "until")])
def test_replay_refuses_bad_arguments(mixed: Path, kwargs: dict[str, Any], name: str) -> None:
    """A bad speed, time basis or time bound is a ValueError naming the argument."""
    with pytest.raises(ValueError, match=f"^{name}:"):
        replay(mixed, **kwargs)


def test_replay_refuses_a_missing_root(tmp_path: Path) -> None:
    """A data root that does not exist is an error, not an empty replay."""
    with pytest.raises(RecorderError):
        replay(tmp_path / "nope")


def test_schedule_stats_percentiles() -> None:
    """Percentiles come from the samples; past the sample bound the count and maximum stay exact."""
    st = ScheduleStats(keep=100)
    for v in range(1000):
        st.add(v * 1000)
    assert st.count == 1000 and len(st.samples) == 100 and st.max_ns == 999_000
    assert st.percentiles()["max"] == 0.999
    exact = ScheduleStats()
    for v in range(1, 101):
        exact.add(v * MS)
    assert exact.percentiles() == {"p50": 51.0, "p90": 91.0, "p99": 100.0, "p99.9": 100.0, "max": 100.0}


def test_cli_replay_writes_envelopes_without_framing(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder replay ROOT --max` prints read()'s envelopes as JSON lines, without commit/prev/h."""
    assert main(["replay", str(mixed), "--max", "-q"]) == 0
    got = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    want = [{k: v for k, v in e.items() if k not in ("commit", "prev", "h")} for e in read(mixed)]
    assert got == want


def test_cli_replay_record_only_sends_the_stored_bytes(mixed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--record-only prints each record's bytes exactly as the journal holds them."""
    assert main(["replay", str(mixed), "--max", "-q", "--type", "a3cp_message", "--record-only"]) == 0
    out = capsys.readouterr().out.encode().splitlines()
    stored = [ln.split(b',"record":', 1)[1].rsplit(b',"prev":', 1)[0].removesuffix(b',"commit":true')
              for p in sorted(mixed.rglob("a3cp_message.jsonl")) for ln in p.read_bytes().splitlines()[1:]]
    assert sorted(out) == sorted(stored) and len(out) == 5


@pytest.mark.parametrize(("argv", "option"), [(["--since", "noon"], "--since"), (["--until", "x"], "--until"),
                                              (["--speed", "0"], "--speed"), (["--to", "bogus://x"], "--to")])
def test_cli_replay_bad_input_names_the_option(mixed: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                               option: str) -> None:
    """Bad replay options exit non-zero with a message naming the option."""
    assert main(["replay", str(mixed), "-q", *argv]) == 2
    assert option in capsys.readouterr().err


def test_cli_replay_without_subscribers_gives_up_naming_the_option(mixed: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A replay to an endpoint nobody subscribes to stops after --wait-timeout with an error, sending nothing
    (exit 3: a runtime failure, as when no recorder answers)."""
    assert main(["replay", str(mixed), "-q", "--to", f"ipc://{tmp_path}/nobody", "--wait-timeout", "0.2"]) == 3
    assert "--wait-subscribers" in capsys.readouterr().err


def test_cli_replay_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing ROOT exits non-zero naming it."""
    assert main(["replay", str(tmp_path / "nope")]) == 2
    assert "ROOT" in capsys.readouterr().err


def test_replay_gives_back_parquet_records_exactly_as_read_does(tmp_path: Path) -> None:
    """A Parquet record with an explicit top-level null and an absent optional field comes back from
    replay() as read() gives it: the null kept, the absent key left out."""
    root = tmp_path / "data"
    rec = sample_raw_action("mia02", "s9", 3)
    rec["modality"] = None
    rec.pop("performer_id", None)
    with Store(None, data_root=root) as s:
        s.record(rec, schema_type="raw_action")
        s.end_session("mia02", "s9")
        s.sealer.wait_idle(30)
    assert list(root.rglob("*.parquet")) and not list(root.rglob("raw_action_*.jsonl"))
    (got,) = [e for e in replay(root, speed=None) if e["schema_type"] == "raw_action"]
    (want,) = [e for e in read(root) if e["schema_type"] == "raw_action"]
    assert got == want and got["record"]["modality"] is None and "performer_id" not in got["record"]

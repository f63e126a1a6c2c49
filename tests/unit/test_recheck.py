"""Recheck: a recording validated against a new registry (nothing written), and re-recorded with --into."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict
from unit_support import audit_events, quarantine

from recorder import Store, read, recheck, verify
from recorder.a3cp import A3CPMessage
from recorder.cli import main
from recorder.schema.config import default_config_text, parse_config
from recorder._recheck import SOURCE_TAGS
from recorder.testing import sample_audit, sample_message, sample_raw_action


class Annotation(BaseModel):
    """The annotation of the tightened model: "toilet" was renamed "bathroom"."""

    model_config = ConfigDict(extra="allow")
    intent: Literal["hungry", "drink", "help", "go_outside", "bathroom", "play", "tired"]


class StrictMessage(A3CPMessage):
    """A3CPMessage with the intent vocabulary of a new schema release."""

    annotation: Annotation | None = None


STRICT = default_config_text().replace('"recorder.a3cp:A3CPMessage"', '"test_recheck:StrictMessage"') \
    .replace('"recorder.a3cp:A3CPMessageV1_1"', '"test_recheck:StrictMessage"')


def record_session(root: Path) -> None:
    """30 messages of two users, audit events, and landmark sequences sealed into Parquet."""
    with Store(None, data_root=root) as s:
        for u in ("u1", "u2"):
            s.record(sample_audit(u, "s1", "session_start"), schema_type="audit_event")
            for i in range(15):
                s.record(sample_message(u, "s1", i + (100 if u == "u2" else 0)), schema_type="a3cp_message")
                if i % 5 == 0:
                    s.record(sample_raw_action(u, "s1", i), schema_type="raw_action")
            s.record(sample_audit(u, "s1", "session_end", 1), schema_type="audit_event")
        s.sealer.wait_idle(30)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recording made with today's shipped registry, with some Parquet segments (read only)."""
    root = tmp_path_factory.mktemp("recheck") / "rec"
    record_session(root)
    assert list(root.rglob("*.parquet"))
    return root


def breaking(root: Path) -> list[int]:
    """The seqs of the messages the tightened model must refuse."""
    return [e["seq"] for e in read(root, schema_type="a3cp_message") if e["record"]["annotation"]["intent"] == "toilet"]


def stored_records(root: Path) -> dict[int, bytes]:
    """seq -> the record's bytes as its a3cp_message journal line holds them."""
    out = {}
    for p in root.rglob("a3cp_message.jsonl"):
        for ln in p.read_bytes().splitlines()[1:]:
            out[json.loads(ln)["seq"]] = ln.split(b',"record":', 1)[1].rsplit(b',"prev":', 1)[0].removesuffix(
                b',"commit":true')
    return out


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def test_recheck_reports_exactly_the_records_a_tightened_field_breaks(recording: Path) -> None:
    """A model that tightens a field fails exactly the records that break it, naming the field; nothing is written."""
    before = snapshot(recording)
    result = recheck(recording, parse_config(STRICT, "<strict>"), show=100)
    msgs = result.types["a3cp_message"]
    want = breaking(recording)
    assert 0 < len(want) < 30
    assert (msgs.checked, msgs.failed) == (30, len(want))
    assert [f.seq for f in msgs.failures] == want
    assert {(f.code, f.field) for f in msgs.failures} == {("invalid", "annotation.intent")}
    assert dict(msgs.fields) == {"annotation.intent": len(want)}
    assert {t: r.failed for t, r in result.types.items() if t != "a3cp_message"} == {"audit_event": 0, "raw_action": 0}
    assert result.types["raw_action"].checked == 6
    assert snapshot(recording) == before


def test_recheck_keeps_the_first_failures_only(recording: Path) -> None:
    """show=N keeps the first N failures per type, in recorder order, and still counts them all."""
    result = recheck(recording, parse_config(STRICT, "<strict>"), show=2)
    assert [f.seq for f in result.types["a3cp_message"].failures] == breaking(recording)[:2]
    assert result.failed == len(breaking(recording))


def test_recheck_against_todays_registry_passes_everything(recording: Path) -> None:
    """The registry the recording was made with accepts every record again."""
    result = recheck(recording, None)
    assert result.checked == len(list(read(recording))) and result.failed == 0


def test_recheck_reports_types_the_new_registry_dropped(recording: Path) -> None:
    """A type no longer registered fails as unknown_schema on its schema type."""
    text = re.sub(r"\[types\.audit_event\]\n(?:(?!\[).*\n)*", "", default_config_text())
    assert "audit_event" not in text
    audit = recheck(recording, parse_config(text, "<no audit>"), show=100).types["audit_event"]
    assert (audit.checked, audit.failed) == (4, 4)
    assert {(f.code, f.field) for f in audit.failures} == {("unknown_schema", "schema_type")}


def test_recheck_into_rerecords_what_passes_and_quarantines_the_rest(recording: Path, tmp_path: Path) -> None:
    """--into re-records passing records with their ids, timestamps and bytes, notes the source, quarantines failures."""
    new = tmp_path / "new"
    result = recheck(recording, parse_config(STRICT, "<strict>"), into=new)
    files, problems = verify([new])
    assert files > 0 and problems == []
    bad = set(breaking(recording))
    old = {e["seq"]: e for e in read(recording)}
    got = list(read(new))
    assert [e["tags"][SOURCE_TAGS[1]] for e in got] == [str(s) for s in old if s not in bad]
    for e in got:
        src = old[int(e["tags"][SOURCE_TAGS[1]])]
        assert e["tags"] == {SOURCE_TAGS[0]: os.path.realpath(recording), SOURCE_TAGS[1]: str(src["seq"]),
                             SOURCE_TAGS[2]: src["received"]}
        for k in ("record_id", "timestamp", "schema_type", "schema_version", "user_id", "session_id", "producer",
                  "pseq", "record"):
            assert e[k] == src[k], k
    raw = stored_records(recording)
    assert set(stored_records(new).values()) == {raw[s] for s in raw if s not in bad}  # the producer's bytes
    q = quarantine(new)
    assert len(q) == len(bad) == result.failed
    assert {(e["code"], e["field"]) for e in q} == {("invalid", "annotation.intent")}
    assert sorted(e["sha256"] for e in q) == sorted("sha256:" + hashlib.sha256(raw[s]).hexdigest() for s in bad)
    assert [e["event_type"] for e in audit_events(new)].count("recheck_finished") == 1
    assert list(new.rglob("raw_action_0000.parquet"))


def test_cli_recheck_reports_and_exits_1_on_failures(recording: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`recorder recheck ROOT --config NEW.toml` prints counts and failures by field and exits 1 when any fail."""
    cfg = tmp_path / "strict.toml"
    cfg.write_text(STRICT)
    assert main(["recheck", str(recording), "--config", str(cfg), "-q"]) == 1
    out = capsys.readouterr().out
    assert "annotation.intent" in out and "a3cp_message" in out
    assert main(["recheck", str(recording), "--config", str(cfg), "-q", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["types"]["a3cp_message"]["fields"] == {"annotation.intent": len(breaking(recording))}
    assert main(["recheck", str(recording), "-q"]) == 0


@pytest.mark.parametrize(("argv", "option"), [(["--into", "{root}"], "--into"), (["--into", "{root}/inner"], "--into"),
                                              (["--into", "{full}"], "--into"), (["--config", "{tmp}/no.toml"], "--config")])
def test_cli_recheck_bad_input_names_the_option(recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                argv: list[str], option: str) -> None:
    """An --into that is not a new data root, or a missing --config, exits 2 naming the option."""
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    args = [a.format(root=recording, full=full, tmp=tmp_path) for a in argv]
    assert main(["recheck", str(recording), "-q", *args]) == 2
    assert option in capsys.readouterr().err


def test_cli_recheck_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing ROOT exits 2 naming it."""
    assert main(["recheck", str(tmp_path / "nope")]) == 2
    assert "ROOT" in capsys.readouterr().err

"""CURVE-protected TCP: only listed client keys get records in; garbage changes nothing."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recorder import Client, RecorderUnavailable, read
from recorder.testing import sample_message


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(d: Path, name: str) -> tuple[Path, Path]:
    subprocess.run([sys.executable, "-m", "recorder", "keygen", str(d), "--name", name], check=True,
                   capture_output=True, timeout=30)
    return d / f"{name}.key", d / f"{name}.key_secret"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[dict[str, Path | str]]:
    server_pub, server_sec = _keygen(tmp_path / "server", "server")
    alice_pub, alice_sec = _keygen(tmp_path / "alice", "alice")
    mallory_pub, mallory_sec = _keygen(tmp_path / "mallory", "mallory")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "alice.key").write_bytes(alice_pub.read_bytes())
    port, cport = _free_port(), _free_port()
    config = tmp_path / "recorder.toml"
    config.write_text(f"""
[recorder]
endpoint = "tcp://127.0.0.1:{port}"
control_endpoint = "tcp://127.0.0.1:{cport}"
curve_server_secret = "{server_sec}"
curve_clients_dir = "{allowed}"
min_free_bytes = 0
[types.a3cp_message]
model = "recorder.a3cp:A3CPMessage"
path = "logs/{{user_id}}/{{schema_type}}.jsonl"
""")
    root = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "recorder.router", "--config", str(config),
                             "--data-root", str(root)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until READY or exit; the test timeout bounds it
        assert line.startswith("READY "), f"recorder did not start: {line!r}"
        yield {"config": str(config), "root": root, "port": port, "server_pub": server_pub,
               "alice_sec": alice_sec, "mallory_sec": mallory_sec, "mallory_pub": mallory_pub}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_listed_client_key_is_accepted(secured: dict[str, Path | str]) -> None:
    """A client whose public key is listed, with the right server key, gets its record stored."""
    c = Client(config=str(secured["config"]), timeout=10, curve_server_public=str(secured["server_pub"]),
               curve_client_secret=str(secured["alice_sec"]))
    c.record(sample_message(i=1), schema_type="a3cp_message", wait=True)
    c.close()
    assert len(list(read(secured["root"]))) == 1


@pytest.mark.parametrize("who", ["unlisted key", "wrong server key", "no key"])
def test_refused_clients_get_a_clear_error_and_store_nothing(secured: dict[str, Path | str], who: str) -> None:
    """Unlisted keys, a wrong server key, or no key at all: 0 records accepted and a clear error."""
    kw = {
        "unlisted key": {"curve_server_public": str(secured["server_pub"]),
                         "curve_client_secret": str(secured["mallory_sec"])},
        "wrong server key": {"curve_server_public": str(secured["mallory_pub"]),
                             "curve_client_secret": str(secured["alice_sec"])},
        "no key": {},
    }[who]
    c = Client(config=str(secured["config"]), timeout=5, **kw)  # type: ignore[arg-type]
    with pytest.raises(RecorderUnavailable) as info:
        c.record(sample_message(i=2), schema_type="a3cp_message", wait=True)
    with pytest.raises(RecorderUnavailable):
        c.close(timeout=0.1)
    assert list(read(secured["root"])) == []
    assert "refused" in str(info.value) or "acknowledge" in str(info.value)


def test_garbage_bytes_to_the_port_change_nothing(secured: dict[str, Path | str]) -> None:
    """Random bytes sent to the TCP port are dropped; a listed client still records afterwards."""
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 8):
        with socket.create_connection(("127.0.0.1", int(secured["port"]))) as s:
            s.sendall(junk)
    c = Client(config=str(secured["config"]), timeout=10, curve_server_public=str(secured["server_pub"]),
               curve_client_secret=str(secured["alice_sec"]))
    c.record(sample_message(i=3), schema_type="a3cp_message", wait=True)
    c.close()
    assert [e["record"]["record_id"] for e in read(secured["root"])] == [sample_message(i=3)["record_id"]]

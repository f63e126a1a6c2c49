"""Helpers for testing producers: realistic example records, valid and invalid."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["sample_message", "sample_raw_action", "sample_audit", "invalid_samples", "timestamp"]

_INTENTS = ["hungry", "drink", "help", "go_outside", "toilet", "play", "tired"]
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def timestamp(offset_s: float = 0.0) -> str:
    """An A3CP timestamp (UTC, milliseconds, ``Z``) at a fixed epoch plus ``offset_s``."""
    t = _EPOCH + timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sample_message(user: str = "elias01", session: str = "sess_demo", i: int = 0,
                   rng: random.Random | None = None, version: str = "1.0.1") -> dict[str, Any]:
    """An ``a3cp_message`` from a gesture classifier, about 1 KB as JSON."""
    rng = rng or random.Random(i)
    probs = [rng.random() for _ in _INTENTS]
    total = sum(probs) + 0.05
    out = {k: round(p / total, 4) for k, p in zip(_INTENTS, probs)}
    out["unknown"] = round(1 - sum(out.values()), 4) if sum(out.values()) < 1 else 0.0
    return {
        "record_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": timestamp(i / 30),
        "schema_version": version,
        "user_id": user,
        "session_id": session,
        "modality": "gesture",
        "source": "gesture_classifier",
        "performer_id": "system",
        "capture_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "classifier_output": out,
        "raw_features_ref": {
            "uri": f"/data/{user}/{session}/gesture_{i:06d}.npz",
            "hash": "sha256:" + "%064x" % rng.getrandbits(256),
            "encoding": "holistic_landmarks_v1;fps=30;extractor_tag=v0.5.4",
            "shape": [42, 128],
            "dtype": "float32",
            "format": "npz",
        },
        "annotation": {"intent": rng.choice(_INTENTS), "confidence_band": "medium",
                       "notes": "carer confirmed by nod; " + "x" * 160},
    }


def sample_raw_action(user: str = "elias01", session: str = "sess_demo", i: int = 0,
                      frames: int = 4) -> dict[str, Any]:
    """A ``raw_action`` landmark sequence: frames x landmark groups x named points."""
    rng = random.Random(i)

    def point() -> dict[str, float]:
        return {"x": round(rng.random(), 3), "y": round(rng.random(), 3),
                "z": round(rng.uniform(-0.1, 0), 3), "visibility": round(rng.random(), 2)}

    return {
        "record_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": timestamp(i / 30),
        "schema_version": "1.0.0",
        "user_id": user,
        "session_id": session,
        "modality": "vision",
        "source": "landmark_extractor",
        "intent_label": rng.choice(_INTENTS),
        "fps": 30.0,
        "frames": [
            {"frame_index": f, "landmarks": {
                "pose_landmarks": {"nose": point(), "left_shoulder": point(), "right_shoulder": point()},
                "right_hand_landmarks": {"thumb_tip": point(), "index_finger_tip": point()},
            }}
            for f in range(frames)
        ],
    }


def sample_audit(user: str = "elias01", session: str = "sess_demo", event: str = "session_start",
                 i: int = 0) -> dict[str, Any]:
    """An ``audit_event`` such as a session start or end."""
    return {
        "record_id": str(uuid.UUID(int=random.Random(i).getrandbits(128), version=4)),
        "timestamp": timestamp(i),
        "schema_version": "1.0.1",
        "user_id": user,
        "session_id": session,
        "source": "session_manager",
        "event_type": event,
        "performer_id": "carer01",
    }


def invalid_samples(user: str = "elias01", session: str = "sess_demo") -> list[tuple[str, dict[str, Any], str]]:
    """(schema type, record, why it must be refused) for a few typical mistakes."""
    good = sample_message(user, session, 7)
    no_unknown = dict(good, classifier_output={"hungry": 0.9, "drink": 0.1})
    return [
        ("a3cp_message", no_unknown, "classifier_output lacks 'unknown'"),
        ("a3cp_message", dict(good, schema_version="2.0.0"), "unknown major version"),
        ("a3cp_message", dict(good, frame_data="data:image/jpeg;base64,/9j/4AAQ"), "denied field"),
        ("a3cp_message", dict(good, user_id="../../etc"), "unsafe identifier"),
        ("a3cp_message", dict(good, timestamp="2025-06-15 12:34"), "timestamp not UTC ISO-8601"),
        ("no_such_type", good, "unknown schema type"),
    ]

"""Example A3CP models shipped for the demo, the tests and as a template.

Written from the record shapes of the public A3CP project (UUID record ids,
millisecond ``Z`` timestamps, MAJOR.MINOR.PATCH schema versions). They are
ordinary pydantic v2 models: a deployment registers its own in the registry.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from .schema.fast import check, implied
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
)

__all__ = [
    "A3CPBase",
    "A3CPMessage",
    "A3CPMessageV1_1",
    "AuditEvent",
    "FeedbackLogEntry",
    "Landmark",
    "LandmarkFrame",
    "RawActionRecord",
    "RawFeaturesRef",
]

_TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|\+00:00)$")
_VERSION = r"^\d+\.\d+\.\d+$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


@implied  # the typed fast path reads a datetime as exactly such a string (recorder.schema.fast)
def _utc_timestamp(value: Any) -> Any:
    # A3CP stamps are UTC strings ending in Z; naive or offset times are
    # ambiguous years later, so they are refused rather than guessed.
    if not isinstance(value, (str, datetime)) or (isinstance(value, str) and not _TS.match(value)):
        raise ValueError("must be an ISO-8601 UTC timestamp like 2025-06-15T12:34:56.789Z")
    return value


@implied  # ... which always ends in Z or +00:00
def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a UTC zone")
    return value


UtcTimestamp = Annotated[datetime, BeforeValidator(_utc_timestamp), AfterValidator(_aware)]
Uuid = Annotated[str, Field(pattern=_UUID)]
Name = Annotated[str, Field(min_length=1, max_length=128)]


class A3CPBase(BaseModel):
    """Fields every A3CP record carries (module ``base`` of the corpus)."""

    model_config = ConfigDict(extra="forbid")

    record_id: Uuid
    timestamp: UtcTimestamp
    schema_version: Annotated[str, Field(pattern=_VERSION)]
    user_id: Name
    session_id: Name | None = None
    modality: Name | None = None
    source: Name | None = None
    performer_id: Name | None = None


class RawFeaturesRef(BaseModel):
    """Pointer to an external feature artifact: raw arrays stay out of logs."""

    model_config = ConfigDict(extra="forbid")

    uri: Annotated[str, Field(min_length=1, max_length=2048)]
    hash: Annotated[str, Field(pattern=r"^sha256:")]
    encoding: str
    shape: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=8)]
    dtype: Name
    format: Name


@check  # a plain dict either way: runs unchanged after the typed decode
def _has_unknown(value: dict[str, float] | None) -> dict[str, float] | None:
    if value is not None and "unknown" not in value:
        raise ValueError("classifier_output must include the 'unknown' class")
    return value


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class A3CPMessage(A3CPBase):
    """A classifier or capture message (``a3cp_message``); extra fields kept."""

    model_config = ConfigDict(extra="allow")

    capture_id: Uuid
    classifier_output: Annotated[
        dict[Name, Probability] | None, AfterValidator(_has_unknown)
    ] = None
    raw_features_ref: RawFeaturesRef | None = None
    annotation: dict[str, Any] | None = None


class A3CPMessageV1_1(A3CPMessage):
    """Version 1.1 adds an optional model identifier (schema evolution demo)."""

    model_version: Name | None = None


class Landmark(BaseModel):
    """One landmark: normalised image coordinates and a visibility score."""

    model_config = ConfigDict(extra="forbid")

    x: float
    y: float
    z: float = 0.0
    visibility: Probability = 1.0


class LandmarkFrame(BaseModel):
    """One frame: landmark groups (pose, hands, face) -> named landmarks."""

    model_config = ConfigDict(extra="forbid")

    frame_index: Annotated[int, Field(ge=0, le=2**31 - 1)]
    timestamp: UtcTimestamp | None = None
    landmarks: dict[Name, dict[Name, Landmark]]


class RawActionRecord(A3CPBase):
    """A landmark sequence (frames x landmarks x coordinates) with its intent."""

    intent_label: Name
    fps: Annotated[float, Field(gt=0, le=1000)] | None = None
    frames: Annotated[list[LandmarkFrame], Field(min_length=1, max_length=10_000)]

    @field_validator("frames")
    @classmethod
    @check  # reads frame_index only, which the fast path's frames carry too
    def _frames_in_order(cls, frames: list[LandmarkFrame]) -> list[LandmarkFrame]:
        indexes = [f.frame_index for f in frames]
        if indexes != sorted(set(indexes)):
            raise ValueError("frame_index must be strictly increasing")
        return frames


class AuditEvent(A3CPBase):
    """An audit event (session start/end, recorder lifecycle); details kept."""

    model_config = ConfigDict(extra="allow")

    event_type: Name | None = None


class FeedbackLogEntry(A3CPBase):
    """A carer's feedback on an interpretation (``feedback_log``)."""

    model_config = ConfigDict(extra="allow")

    entry_id: Uuid
    intent_label: Name | None = None
    label_status: Name | None = None

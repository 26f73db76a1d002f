"""The ``/v1`` answers' schemas (what clients and the contract test read)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["Health", "SessionCreated", "BranchStatus", "Receipt", "ForkResult", "Snapshot", "InterventionLog",
           "UploadedImage"]


class _Reply(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(_Reply):
    status: str
    model: str
    family: str
    conditioning: str
    sessions: int
    max_sessions: int
    version: str
    devices: list[dict[str, Any]]
    samplers: list[str]


class SessionCreated(_Reply):
    session_id: str
    branches: list[str]
    checkpoints: list[int]
    events_url: str
    snapshot_url: str
    log_url: str


class BranchStatus(_Reply):
    branch: str
    state: str
    step: int
    nfe: int
    reason: str | None = None
    error: str | None = None


class Receipt(_Reply):
    rev: int
    applies_from_step: int


class ForkResult(_Reply):
    branches: list[str]
    at_step: int
    seeds: list[int]


class Snapshot(_Reply):
    session_id: str
    model: str
    checkpoints: list[int]
    last_event_id: int
    terminal: bool
    branches: list[dict[str, Any]]


class InterventionLog(_Reply):
    format: str
    version: int
    request: dict[str, Any]
    checkpoints: list[int]
    ops: list[dict[str, Any]]


class UploadedImage(_Reply):
    image_id: str
    width: int
    height: int
    mode: str

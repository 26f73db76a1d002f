"""Branches: the interventions — pause, resume, stop, a condition edit, an edit's mask or strength, a fork,
prune."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from .. import controls
from ..deps import body_schema, edit_body, fork_body, get_branch, get_session, get_studio, patch_body
from ..errors import responses
from ..replies import BranchStatus, ForkResult, Receipt
from ..service import Studio
from ..state import Branch, StudioSession

router = APIRouter(prefix="/v1/sessions/{session_id}/branches/{branch_id}", tags=["branches"])

_CHILD = {"session_id": "$request.path.session_id", "branch_id": "$response.body#/branches/0"}
_FORK_LINKS = {f"{verb.capitalize()}Child": {"operationId": f"{verb}Branch", "parameters": _CHILD}
               for verb in ("pause", "resume", "stop", "fork", "condition", "edit", "prune")}


def _control(studio: Studio, b: Branch, action: str) -> dict[str, Any]:
    with studio.lock:
        out = controls.control(b, action)
    studio.wake()
    return out


@router.post("/pause", operation_id="pauseBranch", response_model=BranchStatus,
             response_model_exclude_none=True, responses=responses(404, 409, 422))
def pause(b: Branch = Depends(get_branch), studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Pause a running branch at its last complete frame (a step in flight is cancelled, no NFE spent)."""
    return _control(studio, b, "pause")


@router.post("/resume", operation_id="resumeBranch", response_model=BranchStatus,
             response_model_exclude_none=True, responses=responses(404, 409, 422))
def resume(b: Branch = Depends(get_branch), studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Resume a paused branch with exactly the numbers it would have had."""
    return _control(studio, b, "resume")


@router.post("/stop", operation_id="stopBranch", response_model=BranchStatus,
             response_model_exclude_none=True, responses=responses(404, 422))
def stop(b: Branch = Depends(get_branch), studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Stop a branch for good, keeping its last complete frame (idempotent)."""
    return _control(studio, b, "stop")


@router.patch("/condition", status_code=202, operation_id="conditionBranch", response_model=Receipt,
              openapi_extra=body_schema("ConditionPatch"), responses=responses(404, 409, 413, 415, 422))
def set_condition(body: Any = Depends(patch_body), b: Branch = Depends(get_branch),
                  studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Change the condition from the next outer step on; the receipt names that step."""
    with studio.lock:
        return controls.set_condition(studio.pipes[b.owner.device].adapter, b, body.changes())


@router.patch("/edit", status_code=202, operation_id="editBranch", response_model=Receipt,
              openapi_extra=body_schema("EditPatch"), responses=responses(404, 409, 413, 415, 422))
def set_edit(body: Any = Depends(edit_body), b: Branch = Depends(get_branch), s: StudioSession = Depends(get_session),
             studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Change an edit's mask (an uploaded image) or strength from the next outer step on; the receipt names
    that step. A new strength restarts a nested edit's outer process within the NFEs left (its later frames
    come at other NFE counts: see the branch's ``checkpoints``)."""
    with studio.lock:
        return controls.set_edit(studio.pipes[s.device].adapter, studio.uploads, s, b, body.changes())


@router.post("/fork", status_code=201, operation_id="forkBranch", response_model=ForkResult,
             openapi_extra=body_schema("ForkRequest"),
             responses={**responses(404, 409, 413, 415, 422), 201: {"links": _FORK_LINKS}})
def fork(body: Any = Depends(fork_body), b: Branch = Depends(get_branch), s: StudioSession = Depends(get_session),
         studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Branch from the last completed step: ``count`` children, or ``count`` variations of ``image``."""
    with studio.lock:
        out = controls.fork(s, b, body, studio.limits)
    studio.wake()
    return out


@router.delete("", status_code=204, operation_id="pruneBranch", response_class=Response,
               responses=responses(404, 422))
def prune(b: Branch = Depends(get_branch), s: StudioSession = Depends(get_session),
          studio: Studio = Depends(get_studio)) -> Response:
    """Delete a branch and its frames (its children live on)."""
    with studio.lock:
        controls.prune(s, b)
    return Response(status_code=204)

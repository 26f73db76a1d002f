"""Frames: a kept frame as PNG (provenance in its text chunks) and a branch's frames as a GIF."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Response

from .. import views
from ..deps import get_branch, get_session, get_studio
from ..errors import responses
from ..frames import gif_bytes, png_bytes
from ..service import Studio
from ..state import Branch, StudioSession

router = APIRouter(prefix="/v1/sessions/{session_id}/branches/{branch_id}", tags=["frames"])


@router.get("/frames/{step}/{image}.png", operation_id="getFrame", response_class=Response,
            responses={**responses(404, 410, 422), 200: {"content": {"image/png": {"schema": {
                "type": "string", "format": "binary"}}}, "description": "the frame"}})
def frame_png(step: int = Path(..., ge=0, description="the frame's step (1 = the first frame)"),
              image: int = Path(..., ge=0, description="the image of the batch"),
              b: Branch = Depends(get_branch), s: StudioSession = Depends(get_session),
              studio: Studio = Depends(get_studio)) -> Response:
    """A frame as PNG, with seed, condition history and NFE in its text chunks."""
    picture, text = views.frame_png(studio, s, b, step, image)
    return Response(png_bytes(picture, text), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=86400, immutable",
                             "Content-Disposition": f'inline; filename="{b.id}-step{step:03d}-nfe{text["nfe"]}'
                                                    f'-{image}.png"'})


@router.get("/animation/{image}.gif", operation_id="getAnimation", response_class=Response,
            responses={**responses(404, 422), 200: {"content": {"image/gif": {"schema": {
                "type": "string", "format": "binary"}}}, "description": "the animation"}})
def animation(image: int = Path(..., ge=0, description="the image of the batch"),
              b: Branch = Depends(get_branch), studio: Studio = Depends(get_studio)) -> Response:
    """Every kept frame of one image of a branch, as a looping GIF."""
    frames = views.frame_sequence(studio, b, image)
    return Response(gif_bytes(frames), media_type="image/gif", headers={
        "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{b.id}-{image}.gif"'})

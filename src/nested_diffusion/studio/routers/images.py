"""Images: upload one to edit (``POST /v1/images``), named by its content."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..deps import get_studio
from ..errors import Invalid, TooLarge, Unsupported, responses
from ..replies import UploadedImage
from ..service import Studio
from ..uploads import UPLOAD_TYPES

router = APIRouter(prefix="/v1/images", tags=["images"])

_BODY = {"requestBody": {"required": True, "description": "the image file itself (the file's own format decides "
                                                           "among PNG, JPEG and WebP)",
                         "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES}}}
_ERRORS = {"format": Unsupported, "size": TooLarge}


@router.post("", status_code=201, operation_id="uploadImage", response_model=UploadedImage, openapi_extra=_BODY,
             responses=responses(413, 415, 422))
async def upload(request: Request, studio: Studio = Depends(get_studio)) -> dict[str, Any]:
    """Upload an image to edit or a mask (PNG, JPEG or WebP; at most the server's ``max_upload_bytes`` and
    ``max_upload_pixels``, checked from the header before anything is decoded). Its id is the SHA-256 of its
    mode, size and pixels: give it as ``image`` or ``mask_image`` to ``POST /v1/sessions`` or ``PATCH
    …/edit``. The server keeps its latest uploads only (``max_uploads``); a session keeps what it uses."""
    from starlette.concurrency import run_in_threadpool

    from ...images import ImageFormatError

    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in UPLOAD_TYPES:
        raise Unsupported(f"an upload must be {', '.join(UPLOAD_TYPES)}, got {media or 'no Content-Type'}")
    body = await request.body()
    try:
        image = await run_in_threadpool(studio.uploads.add, body, max_pixels=studio.limits.max_upload_pixels)
    except ImageFormatError as e:
        raise _ERRORS.get(e.kind, Invalid)(str(e)) from None
    return image.describe()

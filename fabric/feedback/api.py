"""FABRIC's HTTP surface: the feedback-store endpoints and the check of FABRIC payloads.

Two pieces, both given callables that return the current store and limits (so a change in
Settings applies to the next request):

- :func:`create_router` - the ``/fabric/v1`` endpoints (upload, list, fetch and delete images;
  presets; prune).  Mount with ``app.include_router(create_router(...))``.
- :func:`install_request_validation` - the webui catches exceptions raised in script hooks and
  generates anyway, so a bad FABRIC payload in ``/sdapi/v1/txt2img`` or ``img2img`` must be
  refused before the request reaches the webui: this checks ``alwayson_scripts.FABRIC.args``
  and answers 422 (nothing generated) or passes the request on byte for byte.

Every error answer has the shape ``{"error": <kind>, "field": <location or null>, "detail":
"<field>: <message>"}``: 422 for bad input, 404 for an unknown image or preset, 413 for a body
over the request limit, 507 when the store's disk refuses a write.

This module imports FastAPI; ``fabric/__init__`` does not import it.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable, List, Optional

from fastapi import APIRouter, Body, Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request

from ..errors import FabricInputError, FabricNotFoundError, FabricStoreError
from .images import decode_image
from .settings import Limits, parse_feedback_sets, parse_script_args
from .store import FeedbackStore, check_image_id, check_preset_name

__all__ = [
    "API_PREFIX",
    "FabricRequestValidation",
    "VALIDATED_PATHS",
    "create_router",
    "error_body",
    "install_request_validation",
]

log = logging.getLogger("fabric")

API_PREFIX = "/fabric/v1"
#: The webui endpoints whose ``alwayson_scripts`` FABRIC entry is checked.
VALIDATED_PATHS = ("/sdapi/v1/txt2img", "/sdapi/v1/img2img")

StoreGetter = Callable[[], FeedbackStore]
LimitsGetter = Callable[[], Limits]


# -- error answers ---------------------------------------------------------------------------------


def error_body(kind: str, field: Optional[str], detail: str) -> dict[str, Any]:
    return {"error": kind, "field": field, "detail": detail}


def _error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, FabricNotFoundError):
        return JSONResponse(error_body("FabricInputError", exc.field, str(exc)), status_code=404)
    if isinstance(exc, FabricInputError):
        return JSONResponse(error_body("FabricInputError", exc.field, str(exc)), status_code=422)
    if isinstance(exc, FabricStoreError):
        return JSONResponse(error_body("FabricStoreError", None, str(exc)), status_code=507)
    if isinstance(exc, _BodyTooLarge):
        return JSONResponse(error_body("RequestTooLarge", None, str(exc)), status_code=413)
    raise exc


class _BodyTooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(
            f"the request body is over FABRIC's limit of {limit} bytes (max_request_bytes); "
            "send fewer or smaller images, or upload them to /fabric/v1/images first and send their ids"
        )


def _validation_error(exc: RequestValidationError) -> JSONResponse:
    """FastAPI's own body/parameter errors, in FABRIC's error shape."""
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [part for part in first.get("loc", ()) if part not in ("body", "path", "query")]
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    field = field or "body"
    message = first.get("msg", "invalid request")
    if first.get("type") == "value_error.jsondecode":
        field, message = "body", "the body is not valid JSON"
    return JSONResponse(error_body("FabricInputError", field, f"{field}: {message}"), status_code=422)


# -- models (they document the endpoints in the webui's OpenAPI page) ------------------------------


class ErrorAnswer(BaseModel):
    error: str = Field(..., description="FabricInputError, FabricStoreError or RequestTooLarge.")
    field: Optional[str] = Field(None, description="Where the problem is, e.g. liked[2].weight; null for store errors.")
    detail: str = Field(..., description='"<field>: <message>", meant to be shown as it is.')


class ImageUpload(BaseModel):
    images: List[Any] = Field(
        ...,
        description="Pictures as base64 strings or data:image/...;base64, URLs (PNG, JPEG, WebP, GIF, BMP). "
        "File paths and URLs are never read.",
        example=["data:image/png;base64,iVBORw0KGgo..."],
    )


class ImageIds(BaseModel):
    ids: List[str] = Field(..., description="The store id of each uploaded picture, in order (16 hex digits).")


class ImageInfo(BaseModel):
    id: str = Field(..., description="16 hex digits: a hash of the pixels.")
    width: Optional[int] = Field(None, description="Null if the stored file is damaged.")
    height: Optional[int] = None
    bytes: int = Field(..., description="Size of the stored PNG file.")
    mtime: float = Field(..., description="When it was stored, seconds since the epoch.")


class ImageList(BaseModel):
    images: List[ImageInfo]


class FeedbackEntry(BaseModel):
    id: str
    weight: float = Field(1.0, description="0..4; 1 = as is.")


class PresetBody(BaseModel):
    liked: List[Any] = Field(
        default_factory=list,
        description='Liked pictures: image ids, base64 strings, data:image URLs, or {"image": ..., "weight": w}. '
        "Inline pictures are added to the store; ids must already be in it.",
        example=["0123456789abcdef", {"image": "0123456789abcdef", "weight": 1.5}],
    )
    disliked: List[Any] = Field(default_factory=list, description="Disliked pictures, as liked.")


class Preset(BaseModel):
    name: str
    liked: List[FeedbackEntry]
    disliked: List[FeedbackEntry]


class PresetInfo(Preset):
    mtime: float


class PresetList(BaseModel):
    presets: List[PresetInfo]


class PruneBody(BaseModel):
    keep: List[str] = Field(default_factory=list, description="Ids to keep even if no preset names them.")


class PruneResult(BaseModel):
    removed: List[str] = Field(..., description="Ids of the deleted images.")


class Deleted(BaseModel):
    deleted: str


_ERRORS = {
    404: {"model": ErrorAnswer, "description": "No such image or preset."},
    422: {"model": ErrorAnswer, "description": "Bad input; field and detail say where and why."},
    507: {"model": ErrorAnswer, "description": "The store's disk is full or read-only; nothing was changed."},
}
_BODY_ERRORS = {**_ERRORS, 413: {"model": ErrorAnswer, "description": "The body is over the request limit."}}


# -- the /fabric/v1 router -------------------------------------------------------------------------


def create_router(
    get_store: StoreGetter, get_limits: LimitsGetter, *, dependencies: Optional[list] = None
) -> APIRouter:
    """The ``/fabric/v1`` endpoints.  ``dependencies`` (e.g. the webui's API auth) apply to all."""

    class FabricRoute(APIRoute):
        """Answers FABRIC's errors in one shape and bounds the body it reads."""

        def get_route_handler(self):
            handler = super().get_route_handler()

            async def fabric_handler(request: Request) -> Response:
                try:
                    if request.method in ("POST", "PUT", "PATCH"):
                        await _read_body_capped(request, get_limits().max_request_bytes)
                    return await handler(request)
                except RequestValidationError as exc:
                    return _validation_error(exc)
                except (FabricInputError, FabricStoreError, _BodyTooLarge) as exc:
                    return _error_response(exc)

            return fabric_handler

    router = APIRouter(
        prefix=API_PREFIX, tags=["FABRIC"], route_class=FabricRoute, dependencies=dependencies or []
    )

    @router.post(
        "/images",
        response_model=ImageIds,
        responses=_BODY_ERRORS,
        summary="Upload feedback images",
        description="Decodes and checks every picture, then stores them all (or none). Returns their ids.",
    )
    def upload_images(body: ImageUpload) -> ImageIds:
        store, limits = get_store(), get_limits()
        if len(body.images) > limits.max_images_per_set:
            raise FabricInputError(
                "images", f"at most {limits.max_images_per_set} images per upload, got {len(body.images)}"
            )
        decoded = [
            decode_image(value, field=f"images[{i}]", max_pixels=limits.max_pixels, max_bytes=limits.max_image_bytes)
            for i, value in enumerate(body.images)
        ]
        ids = []
        for i in range(len(decoded)):
            ids.append(store.add(decoded[i]))
            decoded[i] = None
        return ImageIds(ids=ids)

    @router.get("/images", response_model=ImageList, responses=_ERRORS, summary="List stored images")
    def list_images() -> ImageList:
        return ImageList(images=[ImageInfo(**entry) for entry in get_store().list()])

    @router.get(
        "/images/{id}",
        response_class=Response,
        responses={**_ERRORS, 200: {"content": {"image/png": {}}, "description": "The stored PNG."}},
        summary="Fetch one stored image (PNG)",
    )
    def get_image(id: str = PathParam(..., description="The image id (16 hex digits).")) -> Response:
        data = get_store().png_bytes(id)
        return Response(content=data, media_type="image/png", headers={"Cache-Control": "max-age=31536000, immutable"})

    @router.delete("/images/{id}", response_model=Deleted, responses=_ERRORS, summary="Delete one stored image")
    def delete_image(id: str = PathParam(..., description="The image id (16 hex digits).")) -> Deleted:
        get_store().delete(id)
        return Deleted(deleted=id)

    @router.get("/presets", response_model=PresetList, responses=_ERRORS, summary="List presets")
    def list_presets() -> PresetList:
        return PresetList(presets=[PresetInfo(**p) for p in get_store().list_presets()])

    @router.get("/presets/{name:path}", response_model=Preset, responses=_ERRORS, summary="Fetch one preset")
    def get_preset(name: str = PathParam(..., description="The preset's name (URL-encoded).")) -> Preset:
        return Preset(**get_store().load_preset(name))

    @router.put(
        "/presets/{name:path}",
        response_model=Preset,
        responses=_BODY_ERRORS,
        summary="Save a preset (replaces one of the same name)",
    )
    def put_preset(
        name: str = PathParam(..., description="Any text of 1-100 characters, URL-encoded."),
        body: PresetBody = Body(...),
    ) -> Preset:
        store, limits = get_store(), get_limits()
        name = check_preset_name(name)
        try:
            liked, disliked = parse_feedback_sets(body.liked, body.disliked, store=store, limits=limits)
        except FabricNotFoundError as exc:  # an unknown id in the body is bad input (422), not a 404
            raise FabricInputError(exc.field, exc.message) from None
        saved = store.save_preset(name, [e.to_dict() for e in liked], [e.to_dict() for e in disliked])
        return Preset(**saved)

    @router.delete("/presets/{name:path}", response_model=Deleted, responses=_ERRORS, summary="Delete a preset")
    def delete_preset(name: str = PathParam(..., description="The preset's name (URL-encoded).")) -> Deleted:
        get_store().delete_preset(name)
        return Deleted(deleted=name)

    @router.post(
        "/prune",
        response_model=PruneResult,
        responses=_BODY_ERRORS,
        summary="Delete the images no preset names",
        description="Images named by a preset, or listed in keep, stay.",
    )
    def prune(body: Optional[PruneBody] = Body(None)) -> PruneResult:
        keep = body.keep if body is not None else []
        for i, ident in enumerate(keep):
            check_image_id(ident, f"keep[{i}]")
        return PruneResult(removed=get_store().prune(keep=keep))

    return router


async def _read_body_capped(request: Request, limit: int) -> None:
    """Read the body into the request's cache, refusing more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge(limit)
        chunks.append(chunk)
    # Starlette's Request.body() returns this cached value; FastAPI reads the body through it.
    request._body = b"".join(chunks)


# -- the check at the HTTP edge --------------------------------------------------------------------


class FabricRequestValidation:
    """ASGI middleware: refuse txt2img/img2img requests whose FABRIC arguments are invalid.

    For a POST to one of ``paths`` it buffers the body (at most ``max_request_bytes``, else 413),
    finds every ``alwayson_scripts`` key equal to "fabric" ignoring case, and runs
    :func:`parse_script_args` on its ``args``.  An invalid payload gets 422 (507 when the store's
    disk refuses its inline images) and never reaches the webui; a valid one has its inline images
    stored, so that the job reads them by id instead of decoding them again.  Every request that
    passes goes on with its body replayed unchanged.  A body that is not JSON or has no FABRIC entry is left to the webui.
    """

    def __init__(self, app, get_store: StoreGetter, get_limits: LimitsGetter, paths=VALIDATED_PATHS):
        self.app = app
        self.get_store = get_store
        self.get_limits = get_limits
        self.paths = frozenset(paths)

    async def __call__(self, scope, receive, send):
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or scope.get("path", "").rstrip("/") not in self.paths
        ):
            await self.app(scope, receive, send)
            return
        limit = self.get_limits().max_request_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _send_json(send, 413, error_body("RequestTooLarge", None, str(_BodyTooLarge(limit))))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; there is nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _send_json(send, 413, error_body("RequestTooLarge", None, str(_BodyTooLarge(limit))))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)

        problem = await run_in_threadpool(self.check, body)
        if isinstance(problem, FabricStoreError):  # the disk refused the inline images: nothing ran
            await _send_json(send, 507, error_body("FabricStoreError", None, str(problem)))
            return
        if problem is not None:
            await _send_json(send, 422, error_body("FabricInputError", problem.field, str(problem)))
            return

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def check(self, body: bytes) -> Optional[FabricInputError | FabricStoreError]:
        """The first problem in the FABRIC arguments of a request body, or None. A valid payload's
        inline images are stored on the way."""
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            return None  # not JSON: the webui answers that itself
        if not isinstance(document, dict) or not isinstance(document.get("alwayson_scripts"), dict):
            return None
        try:
            store, limits = self.get_store(), self.get_limits()
            for key, entry in document["alwayson_scripts"].items():
                if key.lower() != "fabric":
                    continue
                where = f"alwayson_scripts.{key}"
                if not isinstance(entry, dict):
                    return FabricInputError(where, 'must be an object like {"args": [...]}')
                if "args" not in entry:
                    continue
                # A valid payload's inline images go into the store now, as the job would put
                # them there: the job then finds them by id instead of decoding them again.
                parse_script_args(entry["args"], store=store, limits=limits, commit=True, field_prefix=f"{where}.args")
        except (FabricInputError, FabricStoreError) as exc:
            return exc
        except Exception:  # a bug here must not take the webui's API down: let the request through
            log.exception("FABRIC: the request check failed; the request is passed on unchecked")
        return None


async def _send_json(send, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


def install_request_validation(
    app, get_store: StoreGetter, get_limits: LimitsGetter, paths=VALIDATED_PATHS
) -> None:
    """Check FABRIC payloads of txt2img/img2img requests on ``app``, also when it already serves.

    Starlette builds its middleware stack once, on the first request, and ``add_middleware``
    refuses to run after that (RuntimeError in starlette 0.26.1), but the webui calls
    ``on_app_started`` when the app is serving.  The stack is built from the plain list
    ``app.user_middleware``: this adds FABRIC's middleware to that list (innermost, so the
    webui's CORS and GZip wrap its answers too) and sets ``app.middleware_stack`` to None, so
    the next request builds a stack that includes it.  Requests in flight finish on the old
    stack.  The webui does the same itself in ``initialize_util.setup_middleware``.  Calling this
    again replaces the earlier installation.
    """
    kept = [m for m in app.user_middleware if m.cls is not FabricRequestValidation]
    kept.append(Middleware(FabricRequestValidation, get_store=get_store, get_limits=get_limits, paths=tuple(paths)))
    app.user_middleware = kept
    app.middleware_stack = None

"""The ``sam2-fast serve`` application: :func:`create_app` wires the model, the session store,
the model queue, token auth, the JSON API (:mod:`.images`, :mod:`.videos`) and the static page."""

from __future__ import annotations

import hmac
import secrets
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from sam2_fast.errors import InvalidInputError
from sam2_fast.serve.model_queue import ModelQueue
from sam2_fast.serve.schemas import Health, RequestError
from sam2_fast.serve.sessions import SessionNotFound, SessionStore
from sam2_fast.serve.uploads import too_large

STATIC = Path(__file__).parent / "static"
# the multipart framing around an uploaded file (boundaries, part headers)
MULTIPART_SLACK = 64 * 1024
UPLOAD_PATHS = ("/api/images", "/api/videos")


@dataclass(frozen=True)
class ServeLimits:
    """What one client may ask of the server (``sam2-fast serve --max-...``)."""

    max_upload_mb: float = 200.0
    max_frames: int = 300
    max_sessions: int = 16
    max_memory_mb: float = 4096.0
    session_ttl_s: float = 1800.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)


@dataclass
class ServeContext:
    """What the routes share: the model (a :class:`~sam2_fast.SAM2VideoPredictor`, which is
    also the model of every image session's :class:`~sam2_fast.SAM2ImagePredictor`), the
    sessions, the queue in front of the model and the server's temp folder."""

    model: Any
    store: SessionStore
    queue: ModelQueue
    limits: ServeLimits
    workdir: Path
    model_name: str
    random_weights: bool

    def new_session_id(self) -> str:
        return secrets.token_hex(8)


def create_app(
    model: Any,
    limits: ServeLimits = ServeLimits(),
    token: Optional[str] = None,
    model_name: str = "",
    random_weights: bool = False,
    workdir: Optional[Path] = None,
) -> FastAPI:
    """The web app around an already built ``model`` (a :class:`~sam2_fast.SAM2VideoPredictor`).

    ``token``: when given, every ``/api`` call needs ``Authorization: Bearer <token>``.
    ``workdir``: the folder uploads go to (default: a new temp folder, removed at shutdown).
    """
    from sam2_fast.serve import images, videos

    own_workdir = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="sam2-fast-serve-")) if own_workdir else Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    ctx = ServeContext(
        model=model,
        store=SessionStore(limits.max_sessions, int(limits.max_memory_mb * 2**20), limits.session_ttl_s),
        queue=ModelQueue(),
        limits=limits,
        workdir=folder,
        model_name=model_name,
        random_weights=random_weights,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        ctx.store.close_all()
        if own_workdir:
            shutil.rmtree(folder, ignore_errors=True)

    app = FastAPI(
        title="sam2-fast",
        summary="Click-to-segment images and track objects through videos with SAM 2",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    auth = [Depends(_token_check(token))]
    app.include_router(images.router(ctx), dependencies=auth)
    app.include_router(videos.router(ctx), dependencies=auth)

    @app.middleware("http")
    async def refuse_large_uploads(request: Request, call_next):
        # refused from the Content-Length header, before the body is read; a body without one
        # is counted as it is copied (uploads.copy_limited)
        length = request.headers.get("content-length", "")
        if request.method == "POST" and request.url.path in UPLOAD_PATHS and length.isdigit():
            if int(length) > limits.max_upload_bytes + MULTIPART_SLACK:
                return JSONResponse({"detail": str(too_large("the upload", limits.max_upload_bytes))}, 413)
        return await call_next(request)

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc)}, exc.status)

    @app.exception_handler(SessionNotFound)
    async def _not_found(request: Request, exc: SessionNotFound):
        return JSONResponse({"detail": str(exc)}, 404)

    @app.exception_handler(InvalidInputError)
    async def _invalid(request: Request, exc: InvalidInputError):
        return JSONResponse({"detail": str(exc)}, 422)

    @app.get("/healthz", response_model=Health, tags=["server"])
    def healthz() -> Health:
        """The server is up: the model it serves, its sessions, limits and whether the API
        needs a token."""
        return Health(
            status="ok",
            model=ctx.model_name,
            random_weights=ctx.random_weights,
            device=str(ctx.model.device),
            image_size=int(ctx.model.image_size),
            sessions=len(ctx.store),
            queue=ctx.queue.waiting,
            auth=token is not None,
            limits=asdict(limits),
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def _token_check(token: Optional[str]):
    bearer = HTTPBearer(auto_error=False, description="the token given to `sam2-fast serve --token`")

    def check(credentials: Optional[HTTPAuthorizationCredentials] = Depends(bearer)) -> None:
        if token is None:
            return
        given = "" if credentials is None else credentials.credentials
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "this server needs a token: send 'Authorization: Bearer <token>' (the --token the server was "
                "started with)" if credentials is None else "wrong token in 'Authorization: Bearer ...'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check

"""``cnnlab serve``: an HTTP prediction server (FastAPI + uvicorn, the ``serve`` extra) and a web page.

Endpoints (all JSON except the page):

``GET /``
    a page where a person drops (or picks, or pastes) an image and sees the top classes as a bar
    chart; ``/?src=URL`` predicts the image at a same-origin or ``data:`` URL on load.
``GET /health``
    ``{"status": "ok"}`` once the model is loaded.
``GET /model``
    classes, input shape (uint8 [batch, C, H, W]), backend, the source run or file, and the limits.
``POST /predict[?top_k=K]``
    the body is one of

    * ``multipart/form-data`` with one or more image files (any field name; the page uses ``file``);
    * a raw image (``Content-Type: image/png``, ``image/jpeg``, ... or ``application/octet-stream``);
    * JSON: ``{"images": [IMAGE, ...], "top_k": K}``, a bare ``IMAGE`` or a bare list of them, where an
      IMAGE is a nested array of integer pixel values 0..255 of shape [C, H, W] (or [H, W] for a grey
      model) at the model's input size, i.e. already decoded as ``cnnlab.data.folder.load_image`` does.

    Answer: ``{"predictions": [{"file": NAME, "top": [{"class": c, "probability": p}, ...]}, ...],
    "model": NAME, "backend": B, "ms": T}``.

Uploaded files are decoded exactly as training images were (:func:`cnnlab.data.folder.load_image`:
EXIF orientation, grey/RGB conversion, shorter side resized, centre crop), then predicted by the
same :class:`cnnlab.inference.Predictor` as ``cnnlab predict``.

Limits, each a clear 4xx with a ``detail`` message: a body over ``max_upload_bytes`` is refused with
413 (from its Content-Length before anything is read, else as soon as the stream passes the limit);
an image whose header announces more than ``max_pixels`` pixels is refused with 413 before it is
decoded (decompression bombs); more than ``max_images`` images in one request is 413; a body that
is not an image, or JSON of the wrong shape or range, is 422; an unknown Content-Type is 415;
malformed JSON or multipart is 400. At most ``max_concurrency`` predictions compute at once (in a
thread pool, so the event loop keeps answering /health); up to ``max_queue`` more wait for a slot,
and beyond that a request gets 503 with ``Retry-After: 1`` at once instead of piling up; ``cnnlab serve``
also caps open connections (uvicorn's ``limit_concurrency``) at twice that plus 16, so the request bodies
held in memory are bounded too.
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations (Request) at run time
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CnnlabError

if TYPE_CHECKING:  # torch and the predictors load with the server, not with `cnnlab --help`
    import torch

    from .inference import Predictor

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
MAX_UPLOAD_BYTES = 10 * 1024 * 1024     # whole request body
MAX_PIXELS = 40_000_000                  # width x height announced by an image header (a 40-megapixel photo)
MAX_IMAGES = 64                          # images in one request
MAX_CONCURRENCY = 2                      # predictions computing at once (the machine has 2 cores here)
MAX_QUEUE = 32                           # requests waiting for a slot before 503
MAX_TOP_K = 100
PAGE = Path(__file__).with_name("static") / "index.html"


class RequestError(Exception):
    """A client mistake: answered with ``status`` and ``{"detail": message}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class Gate:
    """Bounded concurrency: ``slots`` computations at once, ``queue`` more waiting, the rest refused."""

    def __init__(self, slots: int, queue: int):
        self.slots, self.queue = slots, queue
        self.semaphore = asyncio.Semaphore(slots)
        self.admitted = 0  # computing or waiting

    async def run(self, fn, *args):
        from starlette.concurrency import run_in_threadpool

        if self.admitted >= self.slots + self.queue:
            raise RequestError(503, f"busy: {self.slots} predictions running and {self.queue} waiting; retry shortly",
                               {"Retry-After": "1"})
        self.admitted += 1
        try:
            async with self.semaphore:
                return await run_in_threadpool(fn, *args)
        finally:
            self.admitted -= 1


def decode_upload(data: bytes, name: str, predictor: "Predictor", max_pixels: int) -> "torch.Tensor":
    """One uploaded file -> uint8 [C, H, W], preprocessed as the training images were."""
    from PIL import Image, UnidentifiedImageError

    from .data.folder import load_image

    if not data:
        raise RequestError(422, f"{name}: empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            width, height = img.size
            fmt = (img.format or "png").lower()
    except Image.DecompressionBombError as e:
        raise RequestError(413, f"{name}: {e}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise RequestError(422, f"{name}: not an image cnnlab can read ({type(e).__name__}); send a PNG, JPEG, "
                                f"BMP, TIFF or PNM file") from None
    if width * height > max_pixels:
        raise RequestError(413, f"{name}: {width}x{height} pixels is over the limit of {max_pixels:,} pixels")
    # load_image takes a path (it is the one decoder of training, predict and serve): hand it a temp file
    with tempfile.NamedTemporaryFile(suffix=f".{fmt}") as f:
        f.write(data)
        f.flush()
        try:
            return load_image(f.name, predictor.image_hw, predictor.in_channels)
        except CnnlabError as e:
            raise RequestError(422, f"{name}: {str(e).split(': ', 1)[-1]}") from None


def images_from_json(payload: Any, predictor: "Predictor", max_images: int) -> tuple[list["torch.Tensor"], int | None]:
    """``{"images": [...], "top_k": K}``, one IMAGE or a list of them -> uint8 tensors [C, H, W]."""
    import numpy as np
    import torch

    top_k = None
    if isinstance(payload, dict):
        unknown = set(payload) - {"images", "image", "top_k"}
        if unknown:
            raise RequestError(422, f"unknown JSON keys {sorted(unknown)}; expected images (or image) and top_k")
        top_k = payload.get("top_k")
        if "images" in payload:
            payload = payload["images"]
            if not isinstance(payload, list):
                raise RequestError(422, "images must be a list of images")
            items = payload
        elif "image" in payload:
            items = [payload["image"]]
        else:
            raise RequestError(422, "JSON body needs images: [IMAGE, ...] (each [C, H, W] pixel values 0..255)")
    else:
        items = payload
    c, (h, w) = predictor.in_channels, predictor.image_hw
    want = f"[{c}, {h}, {w}]" + (f" or [{h}, {w}]" if c == 1 else "")
    try:
        array = np.asarray(items)
    except ValueError:  # ragged nesting
        raise RequestError(422, f"images must be rectangular arrays of shape {want}") from None
    if array.ndim in (2, 3) and array.shape[-2:] == (h, w) and (array.ndim == 3 and array.shape[0] == c
                                                                 or array.ndim == 2 and c == 1):
        array = array[None]  # one bare image
    if array.ndim == 3 and c == 1:
        array = array[:, None]
    if array.ndim != 4 or array.shape[1:] != (c, h, w):
        raise RequestError(422, f"each image must have shape {want} (the model's input; decode and resize it "
                                f"first, or upload the file), got array of shape {list(array.shape)}")
    if len(array) == 0:
        raise RequestError(422, "no images in the request")
    if len(array) > max_images:
        raise RequestError(413, f"{len(array)} images in one request; the limit is {max_images}")
    if array.dtype.kind not in "iuf" or (array.dtype.kind == "f" and not np.all(np.mod(array, 1) == 0)):
        raise RequestError(422, "pixel values must be integers 0..255")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise RequestError(422, f"pixel values must be in 0..255, got {array.min()}..{array.max()}")
    return list(torch.from_numpy(array.astype(np.uint8))), top_k


def create_app(predictor: "Predictor", max_upload_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS,
               max_images: int = MAX_IMAGES, max_concurrency: int = MAX_CONCURRENCY, max_queue: int = MAX_QUEUE,
               top_k: int = 5):
    """The FastAPI application serving ``predictor`` (see the module doc for the endpoints and limits)."""
    import torch

    from .inference import require, top_classes

    require("fastapi", "uvicorn", "python_multipart", extra="serve")
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    for flag, value in (("--max-upload-bytes", max_upload_bytes), ("--max-pixels", max_pixels),
                        ("--max-images", max_images), ("--max-concurrency", max_concurrency), ("--top-k", top_k)):
        if int(value) < 1:
            raise CnnlabError(f"{flag} must be >= 1, got {value}")
    if max_queue < 0:
        raise CnnlabError(f"--max-queue must be >= 0, got {max_queue}")
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None)
    gate: Gate | None = None
    limits = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_images": max_images,
              "max_concurrency": max_concurrency, "max_queue": max_queue, "default_top_k": top_k}
    page = PAGE.read_text()

    @app.exception_handler(RequestError)
    async def request_error(request: Request, e: RequestError):
        return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/model")
    async def model_info():
        return {**predictor.describe(), "limits": limits}

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise RequestError(400, f"bad Content-Length {length!r}")
            if int(length) > max_upload_bytes:
                raise RequestError(413, f"request body of {int(length):,} bytes is over the limit of "
                                        f"{max_upload_bytes:,} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                raise RequestError(413, f"request body is over the limit of {max_upload_bytes:,} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def parse(request: Request) -> tuple[list[tuple[str, Any]], int | None]:
        """(name, bytes | uint8 tensor) per image, and top_k from a JSON body."""
        body = await read_body(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/json":
            try:
                payload = json.loads(body)
            except ValueError as e:
                raise RequestError(400, f"malformed JSON: {e}") from None
            tensors, k = images_from_json(payload, predictor, max_images)
            return [(f"image {i}", t) for i, t in enumerate(tensors)], k
        if kind == "multipart/form-data":
            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            try:
                form = await Request(request.scope, replay).form(max_files=max_images, max_fields=max_images,
                                                                 max_part_size=max_upload_bytes)
            except (MultiPartException, HTTPException) as e:  # starlette may wrap the first in the second
                message = getattr(e, "message", None) or getattr(e, "detail", str(e))
                if message.startswith("Too many"):
                    raise RequestError(413, f"too many parts in one request; the limit is {max_images} images") \
                        from None
                raise RequestError(400, f"malformed multipart body: {message}") from None
            except (ValueError, KeyError, AssertionError) as e:
                raise RequestError(400, f"malformed multipart body: {e}") from None
            files = [(v.filename or k, await v.read()) for k, v in form.multi_items() if isinstance(v, UploadFile)]
            await form.close()
            if not files:
                raise RequestError(422, "multipart body holds no file; send the image as a file field "
                                        "(e.g. file=@img.png)")
            if len(files) > max_images:
                raise RequestError(413, f"{len(files)} images in one request; the limit is {max_images}")
            return files, None
        if kind.startswith("image/") or kind == "application/octet-stream":
            return [("upload", body)], None
        raise RequestError(415, f"unsupported Content-Type {kind or '(none)'!r}: send multipart/form-data with an "
                                f"image file, a raw image (image/*), or application/json pixel arrays")

    def predict_now(items: list[tuple[str, Any]], k: int) -> list[dict[str, Any]]:
        images = [x if isinstance(x, torch.Tensor) else decode_upload(x, name, predictor, max_pixels)
                  for name, x in items]
        probs = predictor.probabilities(torch.stack(images))
        return [{"file": name, "top": top_classes(p, predictor.classes, k)} for (name, _), p in zip(items, probs)]

    @app.post("/predict")
    async def predict(request: Request):
        nonlocal gate
        if gate is None:  # created inside the server's event loop
            gate = Gate(max_concurrency, max_queue)
        started = time.perf_counter()
        items, k = await parse(request)
        k = request.query_params.get("top_k", k if k is not None else top_k)
        try:
            k = int(k)
        except (TypeError, ValueError):
            raise RequestError(422, f"top_k must be an integer 1..{MAX_TOP_K}, got {k!r}") from None
        if not 1 <= k <= MAX_TOP_K:
            raise RequestError(422, f"top_k must be 1..{MAX_TOP_K}, got {k}")
        predictions = await gate.run(predict_now, items, k)
        return {"predictions": predictions, "model": predictor.info.get("model"), "backend": predictor.backend,
                "ms": round(1000 * (time.perf_counter() - started), 2)}

    return app


def serve(source: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, backend: str = "auto",
          device: str = "auto", weights: str = "auto", **limits) -> None:
    """Load ``source`` (a run folder, a .onnx or a .pt2 file) and serve it until interrupted."""
    from .inference import load_predictor, require

    require("fastapi", "uvicorn", "python_multipart", extra="serve")
    import uvicorn

    if not 0 <= int(port) <= 65535:
        raise CnnlabError(f"--port must be 0..65535, got {port}")
    sock = listen(host, int(port))  # first: a taken port is reported before seconds of model loading
    try:
        predictor = load_predictor(source, backend, device, weights)
        if predictor.length:
            raise CnnlabError(f"{source}: a run on 1-D signals; cnnlab serve takes image models only for now "
                              f"(use cnnlab predict RUN FILE.npy|.csv; docs/signals.md)")
        app = create_app(predictor, **limits)
    except BaseException:
        sock.close()
        raise
    bound = sock.getsockname()[1]
    print(f"serving {predictor.source} ({predictor.backend}, {len(predictor.classes)} classes, input "
          f"{predictor.in_channels}x{'x'.join(map(str, predictor.image_hw))}) on http://{host}:{bound}/ "
          f"(Ctrl-C stops)", flush=True)
    # connections beyond the admission gate's capacity (plus some for /health, /model and the page) get uvicorn's
    # 503 before their body is read, which bounds the memory that request bodies can take
    gate = limits.get("max_concurrency", MAX_CONCURRENCY) + limits.get("max_queue", MAX_QUEUE)
    config = uvicorn.Config(app, log_level="warning", access_log=False, limit_concurrency=2 * gate + 16)
    server = uvicorn.Server(config)
    server.run(sockets=[sock])


def listen(host: str, port: int):
    """A listening TCP socket (bound here so that a taken port is one clear error, and port 0 works)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CnnlabError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise CnnlabError(f"--host {host} --port {port}: cannot listen ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock

"""mnistcompare-serve: a SavedModel over TF Serving's REST API, and a page to draw two digits.

    mnistcompare-serve runs/demo                  # http://127.0.0.1:8501/ : the drawing page
    curl -d '{"signature_name": "serve_mnist", "instances": [{"image_a": ..., "image_b": ...}]}' \\
        http://127.0.0.1:8501/v1/models/mnistcompare:predict

The API is TF Serving's (status, metadata, :predict in row and columnar formats): a TF Serving client
works here and on a TF Serving of the same export. Requests are checked (size, batch, JSON, shapes, dtypes,
values) and refused with TF Serving's {"error": ...}. Needs `pip install 'mnistcompare[serve]'`.
"""
import asyncio
import json
import os
import re
import resource
import socket
import sys
from importlib import resources

import numpy as np

from mnistcompare.cli import Parser, run
from mnistcompare.data import pool
from mnistcompare.errors import UserError
from mnistcompare.predict import find_saved_model, to_mnist, version_of
from mnistcompare.runtime import available_cpus, quiet_tensorflow

MAX_BODY = 8 * 1024 * 1024  # bytes of a request: 1,000 pairs of raw 28x28 images as JSON text fit
MAX_BATCH = 1024  # instances of one request
TIMEOUT = 10  # seconds: a request's headers arrive within this of its connection (or of the previous answer),
# and its body within this again (8 MB in 10 s: 6.4 Mbit/s); --timeout
IDLE_SECONDS = 5  # a kept-alive connection with no request is closed after this (uvicorn's)
MAX_CONNECTIONS = 256  # open connections; one more is closed at once
HELD_BYTES = 64 * 1024 * 1024  # request bodies held at once (read, or waiting for the model); past it: 503
STOP_SECONDS = 3  # after SIGTERM or Ctrl-C, requests in progress get this long, then the server ends


class ServedModel:
    """A SavedModel's signatures as TF Serving describes and calls them: `version` is the number it is served
    under (its folder's name in a base of versions)."""

    def __init__(self, folder, name, version="1"):
        import tensorflow as tf
        self.folder, self.name, self.version, self.tf = folder, name, version, tf
        self.model = tf.saved_model.load(folder)
        self.signatures = dict(self.model.signatures)
        self.signature_defs = signature_defs(folder)

    def metadata(self):
        return {"model_spec": {"name": self.name, "signature_name": "", "version": self.version},
                "metadata": {"signature_def": {"signature_def": self.signature_defs}}}

    def predict(self, body):
        """A :predict request's answer (row or columnar, as the request), or BadRequest."""
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        signature_name = body.get("signature_name", "serving_default")
        if not isinstance(signature_name, str):
            raise BadRequest("signature_name must be a string")
        if signature_name not in self.signatures:
            raise BadRequest(f"Serving signature name: \"{signature_name}\" not found in signature def; the model "
                             f"has {', '.join(sorted(self.signatures))}")
        specs = self.signatures[signature_name].structured_input_signature[1]
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest("give either \"instances\" (row format) or \"inputs\" (columnar format)")
        if "instances" in body:
            rows = body["instances"]
            if not isinstance(rows, list) or not all(isinstance(r, dict) and set(r) == set(specs) for r in rows):
                raise BadRequest(f"\"instances\" must be a list of objects with exactly {', '.join(sorted(specs))}")
            columns = {k: [r[k] for r in rows] for k in specs}
        else:
            columns = body["inputs"]
            if not isinstance(columns, dict) or set(columns) != set(specs):
                raise BadRequest(f"\"inputs\" must be an object with exactly {', '.join(sorted(specs))}")
        tensors = {k: self.tensor(k, columns[k], specs[k]) for k in specs}
        if len({len(t) for t in tensors.values()}) > 1:
            raise BadRequest("every input must hold the same number of instances")
        try:
            out = self.signatures[signature_name](**{k: self.tf.constant(v) for k, v in tensors.items()})
        except self.tf.errors.InvalidArgumentError as e:
            raise BadRequest(model_message(e)) from None
        out = {k: np.asarray(v).tolist() for k, v in out.items()}
        if "instances" in body:
            return {"predictions": [{k: out[k][i] for k in out} for i in range(len(tensors[next(iter(specs))]))]}
        return {"outputs": out}

    @staticmethod
    def tensor(name, value, spec):
        """A request's values for input `name` as an array of its signature's dtype and shape, checked."""
        dtype = np.dtype(spec.dtype.as_numpy_dtype)
        shape = [d for d in spec.shape[1:]]
        try:
            array = np.array(value, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(f"{name}: expected numbers in a [batch, {', '.join(map(str, shape))}] array") from None
        if array.ndim == 0 or list(array.shape[1:]) != shape:
            raise BadRequest(f"{name}: expected shape [batch, {', '.join(map(str, shape))}], got "
                             f"{list(array.shape)}")
        if len(array) > MAX_BATCH:
            raise BadRequest(f"{name}: {len(array)} instances, more than {MAX_BATCH} in one request")
        if not np.isfinite(array).all():
            raise BadRequest(f"{name}: pixels must be finite numbers")
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            if (array != np.round(array)).any() or array.min(initial=0) < info.min or array.max(initial=0) > info.max:
                raise BadRequest(f"{name}: expected integers of {spec.dtype.name}")
        if array.size and (array.min() < 0 or array.max() > 255):  # checked before float32 could overflow them
            raise BadRequest(f"{name}: pixels must be numbers in 0..255, got {array.min():g} to {array.max():g}")
        return array.astype(dtype)


class BadRequest(Exception):
    pass


def model_message(error):
    """The SavedModel's own words in a TensorFlow error (its checks' messages), not TensorFlow's wrapping."""
    said = re.findall(r"\[([^\[\]]*must[^\[\]]*)\]", error.message)  # tf.debugging's "assertion failed: [...]"
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    return (said[0] if said else lines[-1] if lines else type(error).__name__)[:300]


def signature_defs(folder):
    """The SavedModel's signatures as TF Serving's metadata gives them: its saved_model.pb's SignatureDefs in
    protobuf's JSON form, every field printed, tensor names included (serving_default_image_a:0, ...)."""
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    return {key: json_format.MessageToDict(sig, always_print_fields_with_no_presence=True,
                                           preserving_proto_field_name=True)
            for key, sig in proto.meta_graphs[0].signature_def.items()}


def parse(data):
    """A request's body as JSON, or BadRequest."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest("the request is not valid JSON") from None


def draw_answer(model, body):
    """The drawing page's request: two grayscale drawings (any size, light on dark) -> the 28x28 images in
    MNIST form, the 14x14 images the net reads, and the model's answer."""
    images = []
    for side in ("a", "b"):
        drawing = body.get(f"image_{side}") if isinstance(body, dict) else None
        try:
            array = np.array(drawing, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise BadRequest(f"image_{side}: expected a 2-D array of pixels") from None
        if array.ndim != 2 or not 8 <= min(array.shape) <= max(array.shape) <= 560 or not np.isfinite(array).all():
            raise BadRequest(f"image_{side}: expected a 2-D array of finite pixels, 8 to 560 on a side")
        try:
            images.append(to_mnist(np.clip(array, 0, 255), f"image_{side}"))
        except UserError as e:
            raise BadRequest(str(e)) from None
    answer = model.predict({"signature_name": "serve_mnist",
                            "inputs": {"image_a": [images[0].tolist()], "image_b": [images[1].tolist()]}})["outputs"]
    seen = pool(np.stack(images))[..., 0]
    return {**{k: v[0] for k, v in answer.items()},
            "mnist_a": images[0].tolist(), "mnist_b": images[1].tolist(),
            "seen_a": np.round(seen[0], 2).tolist(), "seen_b": np.round(seen[1], 2).tolist()}


def make_app(model, timeout=TIMEOUT):
    """The Starlette application: TF Serving's REST API under /v1/models/NAME, the drawing page at /.
    `timeout`: the seconds a request's body may take to arrive."""
    import anyio
    from starlette import convertors
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route
    static = resources.files("mnistcompare").joinpath("static")
    page, icon = static.joinpath("draw.html").read_text(), static.joinpath("favicon.svg").read_bytes()

    class ModelName(convertors.StringConvertor):  # a model's name ends before ':' (/v1/models/NAME:predict)
        regex = "[^/:]+"
    convertors.register_url_convertor("model", ModelName())

    workers = anyio.CapacityLimiter(available_cpus())

    def error(message, status=400):
        return JSONResponse({"error": message}, status_code=status)

    held = 0  # bytes of request bodies held at once (read, or waiting for the model): at most HELD_BYTES

    async def body_of(request):
        """(body bytes, None) or (None, an error answer). The bytes taken from `held` are noted in
        request.state.held, for `answer` to give back once it has answered."""
        nonlocal held
        too_large = error(f"the request is larger than {MAX_BODY:,} bytes", 413)
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > 4 * MAX_BODY:  # not even read: the connection is closed
            return None, too_large
        chunks, size = [], 0
        try:
            async with asyncio.timeout(timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size <= MAX_BODY:
                        if held + len(chunk) > HELD_BYTES:
                            return None, error("the server holds too many requests at once; try again", 503)
                        held += len(chunk)
                        request.state.held += len(chunk)
                        chunks.append(chunk)
        except TimeoutError:
            return None, error(f"the request's body did not arrive within {timeout:g} s", 408)
        except ClientDisconnect:  # the client left: nobody reads the answer
            return None, error("the client disconnected", 400)
        except asyncio.CancelledError:  # the server stops (STOP_SECONDS passed) while this body still trickles in
            return None, error("the server is stopping", 503)
        if size > MAX_BODY:  # read to its end (not kept), so that the client, still sending, gets the answer
            return None, too_large
        return b"".join(chunks), None

    async def answer(request, compute):
        """`compute(body)` on the request's JSON body, in one of a few threads (a core each): requests beyond
        them wait their turn, their bodies counted in `held`, which bounds the bytes held at once."""
        nonlocal held
        request.state.held = 0
        try:
            data, refused = await body_of(request)
            if refused:
                return refused
            return JSONResponse(await anyio.to_thread.run_sync(lambda: compute(parse(data)), limiter=workers))
        except BadRequest as e:
            return error(str(e))
        finally:
            held -= request.state.held

    def missing(request):
        """TF Serving's 404 for a model name or version that is not served here, else None."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if name != model.name:
            return error(f"Servable not found for request: Latest({name})", 404)
        if version is not None and version != model.version:
            return error(f"Servable not found for request: Specific({name}, {version})", 404)
        return None

    async def status(request):
        return missing(request) or JSONResponse({"model_version_status": [
            {"version": model.version, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})

    async def metadata(request):
        return missing(request) or JSONResponse(model.metadata())

    async def predict(request):
        return missing(request) or await answer(request, model.predict)

    async def draw(request):
        return await answer(request, lambda body: draw_answer(model, body))

    async def index(request):
        return HTMLResponse(page.replace("MODEL_NAME", model.name))

    async def favicon(request):
        return Response(icon, media_type="image/svg+xml")

    async def http_error(request, exc):  # unknown paths (404) and methods (405): JSON, as TF Serving answers
        what = "Malformed request" if exc.status_code == 404 else "Method not allowed"
        return JSONResponse({"error": f"{what}: {request.method} {request.url.path}"}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    routes = [Route("/", index), Route("/favicon.ico", favicon), Route("/draw", draw, methods=["POST"])]
    for prefix in ("/v1/models/{name:model}", "/v1/models/{name:model}/versions/{version}"):
        routes += [Route(prefix, status), Route(prefix + "/metadata", metadata),
                   Route(prefix + ":predict", predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error})


def serve_parser():
    parser = Parser(
        prog="mnistcompare-serve",
        description="Serve a trained model over TF Serving's REST API (GET /v1/models/NAME, .../metadata, "
                    "POST /v1/models/NAME:predict) with a page at / to draw two digits and watch the model "
                    "compare them.",
        epilog="example: mnistcompare-serve runs/demo, then open http://127.0.0.1:8501/")
    parser.add_argument("model", metavar="MODEL", help="a run folder of mnistcompare-train, or a SavedModel folder")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every "
                             "network the machine is on)")
    parser.add_argument("--port", type=int, default=8501, help="port (default: 8501, TF Serving's REST port)")
    parser.add_argument("--name", default="mnistcompare", help="the model's name in the URLs (default: mnistcompare)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, metavar="SECONDS",
                        help="a request's headers must arrive within this of its connection, and its body within "
                             f"this again; a slower client is cut off (default: {TIMEOUT})")
    return parser


def serve_main(argv=None):
    args = serve_parser().parse_args(argv)

    def main():
        if not 0 < args.port < 65536:
            raise UserError(f"--port: must be in 1..65535, got {args.port}")
        if not 0 < args.timeout <= 3600:
            raise UserError(f"--timeout: must be in (0, 3600] seconds, got {args.timeout:g}")
        if not args.name or not all(c.isalnum() or c in "-_." for c in args.name):
            raise UserError(f"--name: letters, digits, '-', '_' and '.' only, got {args.name!r}")
        folder = find_saved_model(args.model)
        try:  # before the model loads: a port in use is one line, not uvicorn's log and exit 3
            with socket.create_server((args.host, args.port)):
                pass
        except OSError as e:  # (a host name that does not resolve: socket.gaierror, whose errno is negative)
            why = os.strerror(e.errno) if e.errno and e.errno > 0 else e.strerror or str(e)
            raise UserError(f"--port {args.port}: cannot listen on {args.host} ({why})") from None
        try:
            import uvicorn
        except ImportError:
            raise UserError("mnistcompare-serve needs Starlette and uvicorn: pip install 'mnistcompare[serve]'") \
                from None
        quiet_tensorflow()
        try:
            model = ServedModel(folder, args.name, version_of(folder))
        except Exception as e:  # noqa: BLE001 (a damaged file fails in many ways)
            raise UserError(f"{folder}: cannot load the SavedModel ({type(e).__name__}); export it again") from None
        url = f"http://{args.host}:{args.port}"
        print(f"serving {folder} as {args.name!r}, version {model.version}: {url}/ (drawing page), "
              f"{url}/v1/models/{args.name}:predict", flush=True)
        enough_files(MAX_CONNECTIONS + 64)
        server = uvicorn.Server(uvicorn.Config(
            make_app(model, args.timeout), host=args.host, port=args.port, log_level="warning",
            http=deadline_protocol(args.timeout),
            timeout_keep_alive=IDLE_SECONDS, timeout_graceful_shutdown=STOP_SECONDS))
        server.run()  # until SIGTERM or Ctrl-C, which uvicorn raises again once it has stopped (exit 143 or 130)

    run(main, "mnistcompare-serve", argv, stopped=None)


def deadline_protocol(timeout=TIMEOUT):
    """uvicorn's h11 protocol (its `http` setting takes the class) with the deadline it lacks: a connection that
    has not sent a whole request's headers `timeout` seconds after it opened, or after its previous answer, is
    closed; and a bound on open connections (MAX_CONNECTIONS), past which a new one is closed at once.
    uvicorn closes idle kept-alive connections itself, but not one that trickles its headers."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class DeadlineProtocol(H11Protocol):
        deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                transport.close()
                return
            self._arm()

        def data_received(self, data):
            super().data_received(data)
            if self._between_requests():
                self._arm()
            elif self.deadline is not None:  # a request arrived whole: its body has a deadline of its own
                self.deadline.cancel()
                self.deadline = None

        def connection_lost(self, exc):
            if self.deadline is not None:
                self.deadline.cancel()
            super().connection_lost(exc)

        def _between_requests(self):
            return self.cycle is None or self.cycle.response_complete

        def _arm(self):
            if self.deadline is None:
                self.deadline = self.loop.call_later(timeout, self._too_slow)

        def _too_slow(self):
            self.deadline = None
            if self._between_requests() and not self.transport.is_closing():
                self.transport.close()

    return DeadlineProtocol


def enough_files(count):
    """Raise this process's open-file limit to `count` where its hard limit allows (connections are files)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count if hard == resource.RLIM_INFINITY else min(count, hard),
                                                    hard))


if __name__ == "__main__":
    sys.exit(serve_main())

"""mnistcompare-serve: a SavedModel over TF Serving's REST API, and a page to draw two digits.

    mnistcompare-serve runs/demo                  # http://127.0.0.1:8501/ : the drawing page
    curl -d '{"signature_name": "serve_mnist", "instances": [{"image_a": ..., "image_b": ...}]}' \\
        http://127.0.0.1:8501/v1/models/mnistcompare:predict

The API is TF Serving's (status, metadata, :predict in the row and columnar
formats), so a client written for TF Serving works against this server and
against a real TF Serving on the same export. The model is the SavedModel
loaded with plain TensorFlow; requests are checked (size, batch, JSON, shapes,
dtypes, finite values) and refused with 400 / 413 and TF Serving's
{"error": ...}. Starlette and uvicorn come with `pip install 'mnistcompare[serve]'`.
"""
import json
import os
import socket
import sys
from importlib import resources

import numpy as np

from mnistcompare.errors import UserError

MAX_BODY = 8 * 1024 * 1024  # bytes of a request: 1,000 pairs of raw 28x28 images as JSON text fit
MAX_BATCH = 1024  # instances of one request
# the page's icon: "a ≤ b" in two squares
FAVICON = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
           'fill="#1f2937"/><text x="16" y="23" font-size="18" font-family="sans-serif" text-anchor="middle" '
           'fill="#fff">≤</text></svg>')


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

    def inputs(self, signature_name):
        if signature_name not in self.signatures:
            raise BadRequest(f"Serving signature name: \"{signature_name}\" not found in signature def; the model "
                             f"has {', '.join(sorted(self.signatures))}")
        return self.signatures[signature_name].structured_input_signature[1]

    def predict(self, body):
        """A :predict request's answer (row or columnar, as the request), or BadRequest."""
        if not isinstance(body, dict):
            raise BadRequest("the request must be a JSON object")
        signature_name = body.get("signature_name", "serving_default")
        if not isinstance(signature_name, str):
            raise BadRequest("signature_name must be a string")
        specs = self.inputs(signature_name)
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
            raise BadRequest(e.message.split("\n")[0]) from None
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
        return array.astype(dtype)


class BadRequest(Exception):
    pass


def signature_defs(folder):
    """The SavedModel's signatures as TF Serving's metadata gives them: read from its saved_model.pb, tensor
    names included (serving_default_image_a:0, ...)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(folder, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())

    def tensor(info):
        shape = info.tensor_shape
        return {"dtype": types_pb2.DataType.Name(info.dtype),
                "tensor_shape": {"dim": [{"size": str(d.size), "name": d.name} for d in shape.dim],
                                 "unknown_rank": shape.unknown_rank},
                "name": info.name}

    return {key: {"inputs": {k: tensor(v) for k, v in sig.inputs.items()},
                  "outputs": {k: tensor(v) for k, v in sig.outputs.items()}, "method_name": sig.method_name}
            for key, sig in proto.meta_graphs[0].signature_def.items()}


def draw_answer(model, body):
    """The drawing page's request: two grayscale drawings (any size, light on dark) -> the 28x28 images in
    MNIST form, the 14x14 images the net reads, and the model's answer."""
    from mnistcompare.data import pool
    from mnistcompare.predict import to_mnist

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


def make_app(model):
    """The Starlette application: TF Serving's REST API under /v1/models/NAME, the drawing page at /."""
    from starlette import convertors
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    page = resources.files("mnistcompare").joinpath("static", "draw.html").read_text()

    class ModelName(convertors.StringConvertor):  # a model's name ends before ':' (/v1/models/NAME:predict)
        regex = "[^/:]+"
    convertors.register_url_convertor("model", ModelName())

    def error(message, status=400):
        return JSONResponse({"error": message}, status_code=status)

    async def body_of(request):
        too_large = error(f"the request is larger than {MAX_BODY:,} bytes", 413)
        length = request.headers.get("content-length", "0")
        if not length.isdigit() or int(length) > 4 * MAX_BODY:  # not even read: the connection is closed
            return None, too_large
        data, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size <= MAX_BODY:
                data += chunk
        if size > MAX_BODY:  # read to its end (not kept), so that the client, still sending, gets the answer
            return None, too_large
        try:
            return json.loads(data), None
        except (ValueError, RecursionError):
            return None, error("the request is not valid JSON")

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
        if refused := missing(request):
            return refused
        body, refused = await body_of(request)
        if refused:
            return refused
        try:  # the model's call in a thread: the server answers other requests meanwhile
            return JSONResponse(await run_in_threadpool(model.predict, body))
        except BadRequest as e:
            return error(str(e))

    async def draw(request):
        body, refused = await body_of(request)
        if refused:
            return refused
        try:
            return JSONResponse(await run_in_threadpool(draw_answer, model, body))
        except BadRequest as e:
            return error(str(e))

    async def index(request):
        return HTMLResponse(page.replace("MODEL_NAME", model.name))

    async def favicon(request):
        return Response(FAVICON, media_type="image/svg+xml")

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
    from mnistcompare.cli import Parser

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
    return parser


def serve_main(argv=None):
    from mnistcompare.cli import run

    args = serve_parser().parse_args(argv)

    def main():
        from mnistcompare.predict import find_saved_model, version_of

        if not 0 < args.port < 65536:
            raise UserError(f"--port: must be in 1..65535, got {args.port}")
        if not args.name or not all(c.isalnum() or c in "-_." for c in args.name):
            raise UserError(f"--name: letters, digits, '-', '_' and '.' only, got {args.name!r}")
        folder = find_saved_model(args.model)
        try:  # before the model loads: a port in use is one line, not uvicorn's log and exit 3
            with socket.create_server((args.host, args.port)):
                pass
        except OSError as e:
            why = os.strerror(e.errno) if e.errno else str(e)
            raise UserError(f"--port {args.port}: cannot listen on {args.host} ({why})") from None
        try:
            import uvicorn
        except ImportError:
            raise UserError("mnistcompare-serve needs Starlette and uvicorn: pip install 'mnistcompare[serve]'") \
                from None
        from mnistcompare.runtime import quiet_tensorflow

        quiet_tensorflow()
        try:
            model = ServedModel(folder, args.name, version_of(folder))
        except Exception as e:  # noqa: BLE001 (a damaged file fails in many ways)
            raise UserError(f"{folder}: cannot load the SavedModel ({type(e).__name__}); export it again") from None
        url = f"http://{args.host}:{args.port}"
        print(f"serving {folder} as {args.name!r}, version {model.version}: {url}/ (drawing page), "
              f"{url}/v1/models/{args.name}:predict", flush=True)
        uvicorn.run(make_app(model), host=args.host, port=args.port, log_level="warning")

    run(main, "mnistcompare-serve", argv)


if __name__ == "__main__":
    sys.exit(serve_main())

"""An Azure ML v1 entry script: load it, call ``init()`` once, call ``run()`` per request.

Behaviour follows ``azureml-inference-server-http`` (the server Azure ML runs):

* undecorated ``run(data)`` gets the POST body decoded as UTF-8 text (a GET gets
  its query parameters as a JSON object string);
* ``@rawhttp`` ``run(request)`` gets the whole request (:class:`AMLRequest`);
* with ``@input_schema`` the body must be a JSON object (``Content-Type:
  application/json``); each parameter of ``run`` is taken from it by name and the
  inference-schema decorator converts it to the declared type when called;
* a ``request_headers`` parameter, when present, receives the request headers.

One deliberate difference: Azure answers 500 when the decorator cannot convert
the input; here an exception raised before the call reaches the script's own
``run`` body is the client's fault and becomes a :class:`RequestError` (400).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import traceback
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any
from urllib.parse import parse_qsl

from edgeship.errors import ScoringError
from edgeship.scoring.errors import MethodNotAllowedError, RequestError, RunFailedError, UnsupportedMediaError
from edgeship.scoring.shims import install_shims
from edgeship.scoring.wire import HttpRequest, loads

__all__ = ["EntryScript", "RunMode"]

_RAW_FLAG_MODULES = ("azureml.contrib.services.aml_request", "azureml_inference_server_http.api.aml_request")


class RunMode(Enum):
    PLAIN = "plain"  # run(str)
    SCHEMA = "schema"  # @input_schema: run(**json object)
    RAW = "raw"  # @rawhttp: run(AMLRequest)


def _where(tb: TracebackType | None, roots: tuple[Path, ...]) -> str:
    """``file:line`` of the deepest traceback frame inside the user's code, if any."""
    location = ""
    for frame in traceback.extract_tb(tb):
        path = Path(frame.filename).resolve()
        if any(path == r or r in path.parents for r in roots):
            location = f" at {path.name}:{frame.lineno}"
    return location


def _reached(tb: TracebackType | None, code: Any) -> bool:
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return True
        tb = tb.tb_next
    return False


def _query_params(query_string: bytes) -> dict[str, Any]:
    """Query parameters parsed as JSON values where they are JSON; repeats become lists (as Azure)."""
    grouped: dict[str, list[Any]] = {}
    for key, raw in parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True):
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        grouped.setdefault(key, []).append(value)
    return {key: values[0] if len(values) == 1 else values for key, values in grouped.items()}


class EntryScript:
    """A loaded entry script. Not thread-safe: the server calls it from one thread per worker."""

    def __init__(self, path: Path, module: ModuleType, roots: tuple[Path, ...]) -> None:
        self.path = path
        self.module = module
        self._roots = roots
        self._init: Callable[[], Any] = module.init
        self.run: Callable[..., Any] = module.run
        self._user_code = inspect.unwrap(self.run).__code__
        self.mode, self.params, self._wants_headers = self._analyze()

    # Loading ----------------------------------------------------------------
    @classmethod
    def load(cls, script: str | Path, source_dir: str | Path | None = None) -> EntryScript:
        path = Path(script).expanduser().resolve()
        if not path.is_file():
            raise ScoringError(
                f"Entry script {script} does not exist; pass --entry-script the path of your score.py."
            )
        roots = tuple({path.parent, *([Path(source_dir).expanduser().resolve()] if source_dir else [])})
        install_shims()
        for (
            root
        ) in roots:  # appended, as Azure ML does, so the script's folder cannot shadow installed packages
            if str(root) not in sys.path:
                sys.path.append(str(root))
        for name in _RAW_FLAG_MODULES:
            if name in sys.modules:
                sys.modules[name]._rawHttpRequested = False  # type: ignore[attr-defined]
        spec = importlib.util.spec_from_file_location("entry_module", path)
        if spec is None or spec.loader is None:
            raise ScoringError(f"{path} cannot be imported as Python; the entry script must be a .py file.")
        module = importlib.util.module_from_spec(spec)
        sys.modules["entry_module"] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            raise ScoringError(
                f"Importing {path.name} failed{_where(exc.__traceback__, roots)}: {type(exc).__name__}: {exc}"
            ) from exc
        for name in ("init", "run"):
            if not callable(getattr(module, name, None)):
                raise ScoringError(
                    f"{path.name} defines no {name}() function; "
                    "an Azure ML entry script needs init() and run(data)."
                )
        return cls(path, module, roots)

    def _analyze(self) -> tuple[RunMode, list[inspect.Parameter], bool]:
        try:
            params = list(inspect.signature(self.run).parameters.values())
        except (TypeError, ValueError) as exc:
            raise ScoringError(f"run() in {self.path.name} has no readable signature ({exc}).") from exc
        allowed = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if any(p.kind not in allowed for p in params):
            raise ScoringError(
                f"run() in {self.path.name} cannot take positional-only arguments, *args or **kwargs."
            )
        wants_headers = any(p.name == "request_headers" for p in params)
        params = [p for p in params if p.name != "request_headers"]
        if not params:
            raise ScoringError(f"run() in {self.path.name} takes no argument; write it as run(data).")
        from inference_schema.schema_util import is_schema_decorated

        raw = any(getattr(sys.modules.get(n), "_rawHttpRequested", False) for n in _RAW_FLAG_MODULES)
        decorated = bool(is_schema_decorated(self.run))
        if raw and decorated:
            raise ScoringError(
                f"run() in {self.path.name} cannot be decorated with both @rawhttp and @input_schema."
            )
        if raw:
            return RunMode.RAW, params[:1], wants_headers
        if decorated:
            return RunMode.SCHEMA, params, wants_headers
        return RunMode.PLAIN, params[:1], wants_headers

    # Calling ----------------------------------------------------------------
    def init(self) -> None:
        """Call ``init()``; any failure is a ScoringError naming the script line."""
        try:
            self._init()
        except (Exception, SystemExit) as exc:
            raise ScoringError(
                f"init() in {self.path.name} failed{_where(exc.__traceback__, self._roots)}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def arguments(self, request: HttpRequest) -> dict[str, Any]:
        """The keyword arguments ``run()`` gets for this request (Azure's input parsers)."""
        first = self.params[0].name
        if self.mode is RunMode.RAW:
            from azureml.contrib.services.aml_request import AMLRequest

            host = (request.header(b"host") or b"localhost").decode("latin-1")
            return {
                first: AMLRequest(
                    request.method,
                    request.path,
                    request.query_string,
                    request.text_headers(),
                    request.body,
                    request.scheme,
                    host,
                )
            }
        if request.method not in ("GET", "POST"):
            raise MethodNotAllowedError(f"/score accepts GET and POST, not {request.method}.")
        if self.mode is RunMode.PLAIN:
            if request.method == "GET":
                return {first: json.dumps(_query_params(request.query_string))}
            try:
                return {first: request.body.decode("utf-8")}
            except UnicodeDecodeError as exc:
                raise RequestError(f"The request body cannot be decoded as UTF-8: {exc}.") from None
        if request.method == "GET":
            body: Any = _query_params(request.query_string)
        else:
            if not request.is_json:
                raise UnsupportedMediaError(
                    "run() has an input schema: send the body with Content-Type application/json."
                )
            body = loads(request.body)
        return self.arguments_from_json(body)

    def arguments_from_json(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise RequestError(
                f"The request body must be a JSON object with the keys {[p.name for p in self.params]}."
            )
        if self.mode is not RunMode.SCHEMA:
            return {self.params[0].name: json.dumps(body)}
        arguments: dict[str, Any] = {}
        for param in self.params:
            value = body.get(param.name, param.default)
            if value is inspect.Parameter.empty:
                raise RequestError(
                    f"The request body gives no value for the {param.name!r} parameter of run()."
                )
            arguments[param.name] = value
        return arguments

    def call(self, arguments: dict[str, Any], headers: list[tuple[str, str]] | None = None) -> Any:
        """Run the script; the decorator's conversion errors become RequestError, the rest RunFailedError."""
        if self._wants_headers:
            arguments = {**arguments, "request_headers": dict(headers or [])}
        try:
            return self.run(**arguments)
        except (Exception, SystemExit) as exc:  # sys.exit() in run() is the script's failure, not the server's
            if self.mode is RunMode.SCHEMA and not _reached(exc.__traceback__, self._user_code):
                raise RequestError(f"The input does not match the schema of run(): {exc}") from exc
            raise RunFailedError(
                f"run() in {self.path.name} raised{_where(exc.__traceback__, self._roots)} "
                f"{type(exc).__name__}: {exc}"
            ) from exc

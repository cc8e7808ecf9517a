"""The HTTP pieces caikit's two servers share (`caikit serve`, caikit.serve; `caikit serve-reward`,
caikit.reward_server): a batcher that gathers concurrent requests into one batch for one worker
thread, routes with OpenAI-style JSON errors, an API-key check and one log line per request, JSON
bodies with a size limit, and `Running` to serve an app in a thread (tests, notebooks)."""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from caikit.errors import CaikitError

log = logging.getLogger("caikit.serve")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    kind: str  # which runner
    items: list
    options: dict = field(default_factory=dict)
    future: Future = field(default_factory=Future)


class Batcher:
    """Gathers the jobs that arrive within `window` seconds (up to `max_rows` items) and runs each
    kind's together in one worker thread: `runners[kind](items, jobs)` returns one result per item."""

    def __init__(self, runners: dict, window: float = 0.02, max_rows: int = 64):
        self.runners, self.window, self.max_rows = runners, window, max_rows
        self.batches = 0
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._worker: threading.Thread | None = None  # started by the first job, unless work_here() runs the batches
        self._lock = threading.Lock()

    def submit(self, kind: str, items: list, **options) -> Future:
        job = _Job(kind, items, options)
        with self._lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._loop, name="caikit-batcher", daemon=True)
                self._worker.start()
        self._queue.put(job)
        return job.future

    def work_here(self, running) -> None:
        """Run the batches on the calling thread for as long as `running()` is true (serve_forever)."""
        with self._lock:
            self._worker = threading.current_thread()
        self._loop(running)

    async def run(self, kind: str, items: list, **options) -> list:
        return await asyncio.wrap_future(self.submit(kind, items, **options))

    def _loop(self, running=lambda: True):
        while running():
            try:
                jobs = [self._queue.get(timeout=0.5)]
            except queue.Empty:
                continue
            deadline = time.monotonic() + self.window
            while sum(len(j.items) for j in jobs) < self.max_rows:
                try:
                    jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self.batches += 1
            for kind in self.runners:
                group = [j for j in jobs if j.kind == kind and j.future.set_running_or_notify_cancel()]
                if group:
                    self._run(kind, group)

    def _run(self, kind: str, jobs: list[_Job]):
        items = [item for job in jobs for item in job.items]
        try:
            results = self.runners[kind](items, jobs)
        except Exception as err:  # a failed batch fails its requests, not the server
            log.exception("batch failed")
            for job in jobs:
                job.future.set_exception(err)
            return
        start = 0
        for job in jobs:
            job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)


def bind(host: str, port: int) -> socket.socket:
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(info[0], socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(info[4])
        listener.listen(128)  # connections made once the URL is printed wait in the backlog, not refused
    except OSError as err:
        raise CaikitError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})") from None
    return listener


def serve_forever(app, listener) -> None:
    """Serve `app` (whose `state.batcher` runs the model) on `listener` until SIGINT or SIGTERM: the
    HTTP side in a thread, the batches on this, the main thread. (torch in a second thread was
    measured 1.4-1.8x slower on 2 cores than in the main thread, which had loaded the model: GNU
    OpenMP keeps each thread's pool of workers, and with more of them than cores it stops spinning
    between the small parallel regions of a forward pass.)"""
    import os
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    http = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="caikit-http", daemon=True)
    def stop(sig, _frame):  # the first signal finishes what is in flight, a second one stops at once
        if server.should_exit:
            os._exit(128 + sig)
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    http.start()
    app.state.batcher.work_here(http.is_alive)


def serve_plain(app, listener) -> None:
    """Serve an `app` that runs no model (caikit view) on `listener` until SIGINT or SIGTERM."""
    import uvicorn

    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[listener])


@dataclass
class Failures:
    """Requests a server could not answer, counted by status, with the last one's reason: a client
    that only logs failures where nobody looks (OpenRLHF puts a non-200 reward reply in its info log,
    and the sample silently gets no reward) shows up on the server's side, in `GET /health`."""

    requests: int = 0
    by_status: dict = field(default_factory=dict)
    last: str | None = None

    def add(self, status: int, path: str, message: str) -> None:
        self.by_status[str(status)] = self.by_status.get(str(status), 0) + 1
        self.last = f"{status} {path}: {message}"

    def report(self) -> dict:
        return {"requests": self.requests, "failed": sum(self.by_status.values()), "failed_by_status": dict(self.by_status),
                "last_failure": self.last}


def logged(path: str, handler, methods: list[str], api_key: str | None, failures: Failures | None = None):
    """A Starlette route whose errors are OpenAI-style JSON, with the bearer-token check and one log
    line per request (at warning, with the reason, for a request that failed; counted in `failures`)."""
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        started, status = time.monotonic(), 200
        try:
            if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
                raise BadRequest("missing or wrong API key", 401)
            result = await handler(request)
        except BadRequest as err:
            status, result = err.status, {"error": {"message": str(err), "type": "invalid_request_error", "code": err.status}}
        except Exception as err:  # noqa: BLE001 - one failed request must not stop the server
            log.exception("request failed")
            status, result = 500, {"error": {"message": f"{type(err).__name__}: {err}", "type": "server_error", "code": 500}}
        usage = result.get("usage") if status == 200 else None
        tokens = f" {usage['prompt_tokens']}+{usage['completion_tokens']} tok" if usage else ""
        client = request.client.host if request.client else "-"
        line = (client, request.method, path, status, 1000 * (time.monotonic() - started))
        if failures is not None:
            failures.requests += 1
        if status == 200:
            log.info("%s %s %s %d %.0f ms%s", *line, tokens)
        else:
            log.warning("%s %s %s %d %.0f ms: %s", *line, result["error"]["message"])
            if failures is not None:
                failures.add(status, path, result["error"]["message"])
        return JSONResponse(result, status_code=status)

    return Route(path, endpoint, methods=methods)


def _no_constant(name: str):
    raise BadRequest(f"the body holds {name}, which is not JSON")


async def json_body(request, max_bytes: int) -> dict:
    """The request's JSON object, at most `max_bytes` long: standard JSON only (no NaN or Infinity),
    nested at most a few hundred levels, its text valid Unicode (no lone surrogates)."""
    import json

    if int(request.headers.get("content-length") or 0) > max_bytes:
        raise BadRequest(f"request larger than {max_bytes} bytes", 413)
    raw = await request.body()
    if len(raw) > max_bytes:
        raise BadRequest(f"request larger than {max_bytes} bytes", 413)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
        json.dumps(body, ensure_ascii=False).encode("utf-8")  # a lone surrogate (\\ud800) cannot be encoded
    except RecursionError:
        raise BadRequest("the body is nested too deeply") from None
    except UnicodeEncodeError:
        raise BadRequest("the body holds text that is not valid Unicode (a lone surrogate)") from None
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


class Running:
    """`with Running(app, port=0) as url:` serves `app` on 127.0.0.1 in a thread (tests, notebooks)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}/v1"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        return False

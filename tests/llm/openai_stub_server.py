"""A real, tiny OpenAI-compatible HTTP server for tests, with fault injection.

Answers are deterministic: `/v1/chat/completions` replies "chat:" + the last user message, `/v1/completions`
replies "text:" + the prompt; one "token" is one whitespace-separated word. If the reply has more words than
`max_tokens`, it is cut there and finish_reason is "length".

Faults are chosen by marker words in the last user message / prompt, so one batch can mix good and bad requests:

    FAIL<code>      always answer HTTP <code> (e.g. FAIL400, FAIL500; FAIL429 sends `Retry-After: stub.retry_after`)
    SLOW            sleep `stub.slow_seconds` before answering (longer than the client timeout)
    DELAY           sleep `stub.delay_seconds` before answering (to observe concurrency)
    RESET           read the request, then drop the connection with a TCP RST and no response
    BADJSON         200 with a body that is not JSON
    NOCHOICES       200 with JSON that has no `choices`
    NOUSAGE         succeed, but with finish_reason null and no `usage`
    TRUNCATED       200 announcing the full Content-Length, then half the JSON body and a closed connection

A suffix `xN` limits a fault to the first N requests carrying that exact text (`FAIL500x2`: two 500s, then a
normal answer). Counters are per exact text, so distinct requests never share a budget.

`stub.chaos(rate, seed)` injects faults at random instead: each request without a marker gets, with probability
`rate`, one fault drawn from `CHAOS` (seeded, so a run's sequence of draws is reproducible); `stub.injected`
counts what was injected. This is a flaky server for whole stages, whose prompts carry no markers.

Run standalone for manual poking: `python tests/llm/openai_stub_server.py --port 8000`.
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

_MARKER = re.compile(r"\b(FAIL\d{3}|SLOW|DELAY|RESET|BADJSON|NOCHOICES|NOUSAGE|TRUNCATED)(?:x(\d+))?\b")
#: the faults `chaos()` draws from: server errors, rate limits, answers slower than the client's timeout, dropped
#: connections, garbage and cut-off bodies
CHAOS = ("FAIL500", "FAIL503", "FAIL429", "SLOW", "RESET", "BADJSON", "NOCHOICES", "TRUNCATED")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers; every response sends Content-Length
    server: "StubServer"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in self.server.models]})
        elif self.path.rstrip("/") == "/stub/stats":  # the request counter, for tests that run us as a process
            with self.server.lock:
                stats = {"answered": self.server.answered, "seen": dict(self.server.seen),
                         "models": dict(Counter(str(r["body"].get("model")) for r in self.server.requests))}
            self._send(200, stats)
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        path = self.path.rstrip("/")
        stub = self.server
        with stub.lock:
            stub.requests.append({"path": path, "body": body, "headers": dict(self.headers)})
            stub.in_flight += 1
            stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
        try:
            self._answer(path, body)
        except (ConnectionError, OSError):  # the client gave up on us (timeout): nothing to answer
            self.close_connection = True
        finally:
            with stub.lock:
                stub.in_flight -= 1

    def _answer(self, path: str, body: dict[str, Any]) -> None:
        stub = self.server
        if path == "/v1/chat/completions":
            users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
            text, prefix = (users[-1] if users else ""), "chat:"
            prompt_words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
        elif path == "/v1/completions":
            text, prefix = str(body.get("prompt", "")), "text:"
            prompt_words = len(text.split())
        else:
            self._send(404, {"error": {"message": f"no route {path}"}})
            return

        with stub.lock:
            stub.seen[text] += 1
            nth = stub.seen[text]
        faults = {m.group(1) for m in _MARKER.finditer(text) if m.group(2) is None or nth <= int(m.group(2))}
        if not faults and (drawn := stub.draw_fault()):
            faults = {drawn}

        for fault in faults:
            if fault.startswith("FAIL"):
                code = int(fault[4:])
                headers = {"Retry-After": stub.retry_after} if code == 429 and stub.retry_after is not None else {}
                self._send(code, {"error": {"message": f"injected {fault}", "code": code}}, headers)
                return
        if "SLOW" in faults:
            stub.stopping.wait(stub.slow_seconds)
        if "DELAY" in faults:
            time.sleep(stub.delay_seconds)
        elif stub.every_delay:
            time.sleep(stub.every_delay)
        if "RESET" in faults:
            # SO_LINGER 0 makes close() send RST instead of FIN: the client sees "connection reset".
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if "BADJSON" in faults:
            self._send(200, b"<html>502 Bad Gateway (not JSON)</html>")
            return
        if "NOCHOICES" in faults:
            self._send(200, {"object": "error", "message": "injected NOCHOICES"})
            return
        if "TRUNCATED" in faults:
            raw = json.dumps({"id": "stub-cut", "choices": [{"index": 0, "text": text}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw[: len(raw) // 2])
            self.wfile.flush()
            self.close_connection = True
            return

        words = (stub.responder(text) if stub.responder else prefix + text).split(" ")
        max_tokens = int(body.get("max_tokens", 256))
        finish = "length" if len(words) > max_tokens else "stop"
        reply = " ".join(words[:max_tokens])
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if path == "/v1/chat/completions":
            choice["message"] = {"role": "assistant", "content": reply}
        else:
            choice["text"] = reply
        payload: dict[str, Any] = {"id": f"stub-{nth}", "object": "stub", "model": body.get("model"),
                                   "choices": [choice]}
        if "NOUSAGE" in faults:
            choice["finish_reason"] = None
        else:
            payload["usage"] = {"prompt_tokens": prompt_words, "completion_tokens": len(reply.split()),
                                "total_tokens": prompt_words + len(reply.split())}
        self._send(200, payload)
        with stub.lock:
            stub.answered += 1


class StubServer(ThreadingHTTPServer):
    """Start with `start()`, stop with `stop()`; `url` is the `/v1` base URL. Inspect `requests` (every POST,
    in arrival order), `seen` (requests per exact text), `max_in_flight`."""

    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs under a burst of concurrent connects

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.models = ["stub-model"]  # what /v1/models lists (plus LoRA modules, as vLLM lists them)
        self.seen: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.retry_after: str | None = "0"
        self.slow_seconds = 30.0
        self.delay_seconds = 0.05
        self.every_delay = 0.0  # seconds every request without a marker takes (a slow model)
        self.answered = 0  # successful answers sent
        #: optional `text -> reply` to answer like a real model would (e.g. JSON templates for a stage test)
        self.responder: Callable[[str], str] | None = None
        self.fault_rate = 0.0
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(0)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def chaos(self, rate: float, seed: int = 0) -> "StubServer":
        """From now on, fail a share `rate` of the requests that carry no marker with a random fault of `CHAOS`."""
        with self.lock:
            self.fault_rate, self._rng = rate, random.Random(seed)
        return self

    def draw_fault(self) -> str | None:
        with self.lock:
            if not self.fault_rate or self._rng.random() >= self.fault_rate:
                return None
            fault = self._rng.choice(CHAOS)
            self.injected[fault] += 1
            return fault

    def count(self, path: str | None = None) -> int:
        """POSTs received, optionally only those to `path` (e.g. "/v1/completions")."""
        with self.lock:
            return sum(1 for r in self.requests if path is None or r["path"] == path)

    def handle_error(self, request: Any, client_address: Any) -> None:  # clients hanging up are expected here
        pass

    def shutdown_request(self, request: socket.socket) -> None:
        """socketserver sends FIN (shutdown SHUT_WR) before closing; for a RESET request skip that, so the
        linger-0 close() puts a bare RST on the wire, like a crashed server or a killed proxy."""
        try:
            linger_on, linger_s = struct.unpack("ii", request.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))
        except OSError:
            linger_on = linger_s = 0
        if linger_on and linger_s == 0:
            self.close_request(request)
        else:
            super().shutdown_request(request)

    def start(self) -> "StubServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes SLOW handlers so no thread outlives the test
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = StubServer(args.host, args.port)
    print(f"serving on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.server_close()

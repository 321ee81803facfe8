"""A real local HTTP server speaking the OpenAI chat-completions protocol, for tests and benchmarks.

`FakeOpenAIServer` listens on a free loopback port (stdlib `ThreadingHTTPServer`, one thread per connection)
and answers `POST /v1/chat/completions` with crafted content and logprob tables, so that the real `openai`
client can be tested end to end. It can add latency, inject failures (429, 500, or a reply slower than the
client's timeout), refuse `response_format` like a server without structured outputs, and counts and logs
every request it receives.

    with FakeOpenAIServer(reply=lambda body: {"logprobs": [("42", -0.1), ("41", -2.5)]}) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="sk-test")
        ...
        srv.requests  # how many requests arrived
"""
from __future__ import annotations
import hashlib, json, math, random, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

__all__ = ["FakeOpenAIServer", "default_table", "expected_score", "prompt_of"]


def prompt_of(body: dict) -> str:
    "The text of the last user message of a chat-completions request body."
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def default_table(prompt: str) -> list[tuple[str, float]]:
    "A deterministic top-logprob table for `prompt`: three integer tokens (90% of the mass) and a word (10%)."
    k = _h(prompt) % 91
    return [(str(k), math.log(0.5)), (str(k + 5), math.log(0.3)), (" " + str(k + 9), math.log(0.1)), ("The", math.log(0.1))]


def expected_score(prompt: str) -> float:
    "The judge score `default_table(prompt)` must give (weighted mean of its integer tokens)."
    k = _h(prompt) % 91
    return (0.5 * k + 0.3 * (k + 5) + 0.1 * (k + 9)) / 0.9


def default_reply(body: dict) -> dict:
    "The default answer: `default_table` of the prompt."
    return {"logprobs": default_table(prompt_of(body))}


class FakeOpenAIServer:
    "An OpenAI-compatible chat-completions server on a free loopback port, with latency and failure injection."

    def __init__(self,
                 reply: Callable[[dict], dict] = default_reply,  # body -> {"logprobs": [(token, logprob), ...]} or {"text": str}
                 latency: float = 0.0,  # seconds added to every reply
                 fail_rate: float = 0.0,  # probability that a request fails
                 fail_modes: tuple[str, ...] = ("429", "500", "slow"),  # how a request fails; 'slow' sleeps `slow_s`, then replies
                 slow_s: float = 1.0,  # delay of a 'slow' failure (set it above the client's timeout)
                 max_consecutive_failures: int = 3,  # a prompt never fails more often in a row (so retries always finish)
                 seed: int = 0,  # seed of the failure draws
                 json_schema: bool = True,  # False: answer 400 to any request with `response_format`
                 logprobs: bool = True,  # False: never return logprobs (like a server without them)
                 retry_after: float | None = None,  # Retry-After header (seconds) on 429 replies
                 api_key: str | None = None,  # when set, any other bearer key gets a 401
                 ):
        self.reply, self.latency, self.fail_rate, self.fail_modes = reply, latency, fail_rate, tuple(fail_modes)
        self.slow_s, self.max_consecutive_failures, self.json_schema, self.logprobs = slow_s, max_consecutive_failures, json_schema, logprobs
        self.retry_after, self.api_key = retry_after, api_key
        self._rng, self._lock = random.Random(seed), threading.Lock()
        self.reset()
        self._httpd = None

    # --- bookkeeping -------------------------------------------------------------------------------------
    def reset(self):
        "Zero the request counter and logs."
        with getattr(self, "_lock", threading.Lock()):
            self.requests = 0  # every POST received
            self.requests_log: list[dict] = []  # one entry per request: body, authorization header, status
            self.served = Counter()  # successful replies per prompt
            self.failures = Counter()  # injected failures per mode
            self._streak = Counter()  # consecutive injected failures per prompt
            self.inflight = self.max_inflight = 0  # requests being handled now / at most at once

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    # --- life cycle --------------------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms Nagle + delayed-ACK stall

            def log_message(self, *a): pass

            def _send(self, status: int, obj: dict, headers: dict | None = None):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items(): self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.close_connection = True

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    return self._send(200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]})
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                status, obj, headers = server._handle(self.path, body, self.headers.get("Authorization"))
                self._send(status, obj, headers)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.request_queue_size = 256
        threading.Thread(target=self._httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        return self

    def stop(self):
        if self._httpd is not None:
            self._httpd.shutdown(); self._httpd.server_close(); self._httpd = None

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()

    # --- the protocol ------------------------------------------------------------------------------------
    def _handle(self, path: str, body: dict, auth: str | None) -> tuple[int, dict, dict]:
        entry = dict(body=body, authorization=auth, status=None, t=time.time())
        with self._lock:
            self.requests += 1
            self.requests_log.append(entry)
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try: return self._respond(path, body, auth, entry)
        finally:
            with self._lock: self.inflight -= 1

    def _respond(self, path: str, body: dict, auth: str | None, entry: dict) -> tuple[int, dict, dict]:
        if self.api_key is not None and auth != f"Bearer {self.api_key}":
            entry["status"] = 401
            return 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
                                   "code": "invalid_api_key"}}, {}
        if not path.rstrip("/").endswith("/chat/completions"):
            entry["status"] = 404
            return 404, {"error": {"message": f"no route {path}", "type": "not_found"}}, {}
        if "response_format" in body and not self.json_schema:
            entry["status"] = 400
            return 400, {"error": {"message": "response_format is not supported by this server",
                                   "type": "invalid_request_error", "param": "response_format"}}, {}
        prompt = prompt_of(body)
        mode = None
        with self._lock:
            if self.fail_rate and self._streak[prompt] < self.max_consecutive_failures and self._rng.random() < self.fail_rate:
                mode = self._rng.choice(self.fail_modes)
                self._streak[prompt] += 1
                self.failures[mode] += 1
            else:
                self._streak[prompt] = 0
        if self.latency: time.sleep(self.latency)
        if mode == "429":
            entry["status"] = 429
            hdr = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
            return 429, {"error": {"message": "Rate limit reached (injected)", "type": "rate_limit_error"}}, hdr
        if mode == "500":
            entry["status"] = 500
            return 500, {"error": {"message": "Internal error (injected)", "type": "server_error"}}, {}
        if mode == "slow":
            time.sleep(self.slow_s)
        out = self.reply(body)
        entry["status"] = 200 if mode is None else "slow"
        if mode is None:
            with self._lock: self.served[prompt] += 1
        return 200, self._completion(body, out), {}

    def _completion(self, body: dict, out: dict) -> dict:
        "A chat.completion object for the reply `out`."
        table = out.get("logprobs")
        content = out.get("text", table[0][0] if table else "")
        choice = {"index": 0, "message": {"role": "assistant", "content": content},
                  "finish_reason": "length" if table else "stop", "logprobs": None}
        if table and body.get("logprobs") and self.logprobs:
            n = int(body.get("top_logprobs") or 0)
            tops = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in table[:n]]
            choice["logprobs"] = {"content": [{"token": table[0][0], "logprob": table[0][1],
                                               "bytes": list(table[0][0].encode()), "top_logprobs": tops}]}
        return {"id": f"chatcmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "test-model"), "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

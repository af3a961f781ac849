"""Per-instance EC2 instance metadata (IMDSv2): the logic the local target and the rehearsal share.

The local target serves it on 127.0.0.1 (``raylab.targets.local.imds``); the AWS rehearsal answers
each machine at 169.254.169.254 by its source address (``raylab.rehearsal.metadata``, which adds
the instance role's credentials through ``handle(..., extra=...)``).

On the local target every "EC2 instance" gets its own metadata endpoint: ``http://127.0.0.1:PORT/<instance-id>``.
A process on that node points ``AWS_EC2_METADATA_SERVICE_ENDPOINT`` (botocore) or the spot
watcher's ``--endpoint`` at it, and then sees what it would see at ``169.254.169.254`` on EC2:

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` (1..21600) -> a token;
  missing or out-of-range TTL -> 400.
- ``GET /latest/meta-data/...`` with ``X-aws-ec2-metadata-token``; without a token -> 401 when the
  instance has ``HttpTokens=required`` (the default here, as raylab's launch template sets it);
  an unknown or expired token -> 401 always.
- ``spot/instance-action``: 404 until an interruption is published, then
  ``{"action": "terminate", "time": "2026-11-25T20:13:56Z"}`` exactly as AWS formats it.
- ``events/recommendations/rebalance``: 404, or ``{"noticeTime": "..."}``.
- ``instance-id``, ``instance-type``, ``instance-life-cycle``, ``placement/availability-zone``.

The logic is ``handle(store, method, path, headers)`` (no sockets) so the twin can mount it in its
own HTTP server; ``ImdsServer`` is a small standalone stdlib server for tests and for a twin
that prefers a second port. Control routes (publish/clear notices) are ``handle_control``:
``POST /raylab/imds/<id>/interruption {"action": "terminate", "seconds": 120}``,
``POST /raylab/imds/<id>/rebalance {}``, ``DELETE /raylab/imds/<id>/notices``,
``PUT /raylab/imds/<id> {"instance_type": ..., "az": ..., "lifecycle": ..., "http_tokens": ...}``.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN_TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
MAX_TTL = 21600
ACTIONS = ("terminate", "stop", "hibernate")


def aws_time(t: datetime) -> str:
    """AWS's notice time format: ISO 8601, UTC, whole seconds, trailing Z."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class InstanceMetadata:
    instance_id: str
    instance_type: str = "c7i.4xlarge"
    az: str = "us-west-2a"
    lifecycle: str = "spot"  # "spot" | "on-demand", as instance-life-cycle answers
    http_tokens: str = "required"  # "required" | "optional"
    instance_action: dict[str, str] | None = None
    rebalance: dict[str, str] | None = None


@dataclass(frozen=True)
class Response:
    status: int
    body: str = ""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class MetadataStore:
    """Thread-safe metadata of every local instance, plus the IMDSv2 tokens issued for each."""

    instances: dict[str, InstanceMetadata] = field(default_factory=dict)
    # Where unknown instance ids are looked up (the twin: its EC2 instances) -> register() kwargs.
    lookup: Callable[[str], dict[str, Any] | None] | None = None
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (instance, expiry)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, instance_id: str, **attrs: Any) -> InstanceMetadata:
        with self._lock:
            md = self.instances.get(instance_id) or InstanceMetadata(instance_id)
            for k, v in attrs.items():
                if v is not None:
                    setattr(md, k, v)
            self.instances[instance_id] = md
            return md

    def forget(self, instance_id: str) -> None:
        with self._lock:
            self.instances.pop(instance_id, None)
            for tok in [t for t, (i, _) in self._tokens.items() if i == instance_id]:
                del self._tokens[tok]

    def get(self, instance_id: str) -> InstanceMetadata | None:
        with self._lock:
            md = self.instances.get(instance_id)
        if md is None and self.lookup is not None:
            attrs = self.lookup(instance_id)
            if attrs is not None:
                md = self.register(instance_id, **attrs)
        return md

    def mark_interruption(self, instance_id: str, seconds: float = 120.0, action: str = "terminate",
                          now: datetime | None = None) -> dict[str, str]:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {action!r}")
        when = (now or datetime.now(UTC)) + timedelta(seconds=seconds)
        notice = {"action": action, "time": aws_time(when)}
        self.get(instance_id)  # let the twin's lookup fill in type, AZ and market
        with self._lock:
            md = self.instances.setdefault(instance_id, InstanceMetadata(instance_id))
            md.instance_action = notice
        return notice

    def mark_rebalance(self, instance_id: str, now: datetime | None = None) -> dict[str, str]:
        notice = {"noticeTime": aws_time(now or datetime.now(UTC))}
        self.get(instance_id)
        with self._lock:
            md = self.instances.setdefault(instance_id, InstanceMetadata(instance_id))
            md.rebalance = notice
        return notice

    def clear_notices(self, instance_id: str) -> None:
        with self._lock:
            md = self.instances.get(instance_id)
            if md:
                md.instance_action = None
                md.rebalance = None

    def issue_token(self, instance_id: str, ttl: int, now: float | None = None) -> str:
        tok = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[tok] = (instance_id, (now if now is not None else time.time()) + ttl)
        return tok

    def token_ok(self, instance_id: str, token: str, now: float | None = None) -> bool:
        with self._lock:
            hit = self._tokens.get(token)
        if hit is None:
            return False
        owner, expiry = hit
        return owner == instance_id and (now if now is not None else time.time()) < expiry


def _split(path: str) -> tuple[str, str]:
    """'/i-abc/latest/meta-data/x?y' -> ('i-abc', '/latest/meta-data/x')."""
    p = path.split("?", 1)[0]
    parts = p.lstrip("/").split("/", 1)
    if len(parts) < 2:
        return parts[0], "/"
    return parts[0], "/" + parts[1].rstrip("/")


def _meta(md: InstanceMetadata, sub: str) -> Response:
    if sub == "spot/instance-action":
        return _json(md.instance_action) if md.instance_action else Response(404, "Not Found")
    if sub == "events/recommendations/rebalance":
        return _json(md.rebalance) if md.rebalance else Response(404, "Not Found")
    plain = {
        "instance-id": md.instance_id,
        "instance-type": md.instance_type,
        "instance-life-cycle": md.lifecycle,
        "placement/availability-zone": md.az,
        "placement/region": md.az[:-1],
    }
    if sub in plain:
        return Response(200, plain[sub])
    if sub == "":
        listing = ["events/", "instance-id", "instance-life-cycle", "instance-type", "placement/"]
        if md.instance_action:
            listing.append("spot/")
        return Response(200, "\n".join(listing))
    return Response(404, "Not Found")


def _json(obj: dict[str, str]) -> Response:
    return Response(200, json.dumps(obj), "text/plain")  # AWS serves these as text/plain JSON


Extra = Callable[[InstanceMetadata, str], Response | None]


def handle(store: MetadataStore, method: str, path: str, headers: dict[str, str],
           now: float | None = None, extra: Extra | None = None) -> Response:
    """Answer one IMDS request for ``/<instance-id>/latest/...`` as EC2's IMDSv2 does. ``extra`` answers
    meta-data paths this module does not know (``iam/...``), once the token is checked; None: not its."""
    h = {k.lower(): v for k, v in headers.items()}
    instance_id, sub = _split(path)
    md = store.get(instance_id)
    if md is None:
        return Response(404, "Not Found")
    if sub == "/latest/api/token":
        if method != "PUT":
            return Response(405, "Method Not Allowed", headers=(("Allow", "PUT"),))
        try:
            ttl = int(h.get(TOKEN_TTL_HEADER, ""))
        except ValueError:
            return Response(400, "Bad Request")
        if not 1 <= ttl <= MAX_TTL:
            return Response(400, "Bad Request")
        tok = store.issue_token(instance_id, ttl, now)
        return Response(200, tok, headers=((TOKEN_TTL_HEADER, str(ttl)),))
    if method not in ("GET", "HEAD"):
        return Response(405, "Method Not Allowed")
    token = h.get(TOKEN_HEADER)
    if token is not None:
        if not store.token_ok(instance_id, token, now):
            return Response(401, "Unauthorized")
    elif md.http_tokens == "required":
        return Response(401, "Unauthorized")
    if sub == "/latest/meta-data":
        return _meta(md, "")
    if sub.startswith("/latest/meta-data/"):
        rest = sub[len("/latest/meta-data/"):]
        answered = extra(md, rest) if extra is not None else None
        return answered if answered is not None else _meta(md, rest)
    return Response(404, "Not Found")


CONTROL_PREFIX = "/raylab/imds/"


def handle_control(store: MetadataStore, method: str, path: str, body: bytes) -> Response:
    """The control routes the twin exposes under /raylab/imds/ (JSON in, JSON out)."""
    rest = path.split("?", 1)[0][len(CONTROL_PREFIX):].strip("/")
    parts = rest.split("/") if rest else []
    try:
        data = json.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
    except ValueError as e:
        return Response(400, json.dumps({"error": f"bad JSON: {e}"}), "application/json")
    if not parts:
        if method == "GET":
            with store._lock:
                listing = {i: {"instance_action": m.instance_action, "rebalance": m.rebalance,
                               "lifecycle": m.lifecycle} for i, m in store.instances.items()}
            return Response(200, json.dumps(listing), "application/json")
        return Response(405, json.dumps({"error": "use GET"}), "application/json")
    iid = parts[0]
    verb = parts[1] if len(parts) > 1 else ""
    try:
        if method == "PUT" and verb == "":
            md = store.register(iid, instance_type=data.get("instance_type"), az=data.get("az"),
                                lifecycle=data.get("lifecycle"), http_tokens=data.get("http_tokens"))
            return Response(200, json.dumps({"instance_id": md.instance_id}), "application/json")
        if method == "DELETE" and verb == "":
            store.forget(iid)
            return Response(200, json.dumps({"forgotten": iid}), "application/json")
        if store.get(iid) is None:
            return Response(404, json.dumps({"error": f"no instance {iid}"}), "application/json")
        if method == "POST" and verb == "interruption":
            notice = store.mark_interruption(iid, float(data.get("seconds", 120)),
                                             str(data.get("action", "terminate")))
            return Response(200, json.dumps(notice), "application/json")
        if method == "POST" and verb == "rebalance":
            return Response(200, json.dumps(store.mark_rebalance(iid)), "application/json")
        if method == "DELETE" and verb == "notices":
            store.clear_notices(iid)
            return Response(200, json.dumps({"cleared": iid}), "application/json")
    except (TypeError, ValueError) as e:
        return Response(400, json.dumps({"error": str(e)}), "application/json")
    return Response(404, json.dumps({"error": f"no route {method} {path}"}), "application/json")


def send(h: BaseHTTPRequestHandler, r: Response) -> None:
    """Write ``r`` as the HTTP answer of ``h`` (no body for HEAD), for every IMDS server here."""
    data = r.body.encode()
    h.send_response(r.status)
    h.send_header("Content-Type", r.content_type)
    h.send_header("Content-Length", str(len(data)))
    for k, v in r.headers:
        h.send_header(k, v)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(data)


class ImdsHandler(BaseHTTPRequestHandler):
    """Every method of every IMDS server here: the body read, ``answer(body)`` sent; no access log."""

    def answer(self, body: bytes) -> Response:
        raise NotImplementedError

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        send(self, self.answer(self.rfile.read(length) if length else b""))

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


class _Handler(ImdsHandler):
    server: _Server

    def answer(self, body: bytes) -> Response:
        if self.path.startswith(CONTROL_PREFIX.rstrip("/")):
            return handle_control(self.server.store, self.command, self.path, body)
        return handle(self.server.store, self.command, self.path, dict(self.headers.items()))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: MetadataStore


class ImdsServer:
    """A standalone IMDS on 127.0.0.1 (loopback only, by construction)."""

    def __init__(self, store: MetadataStore | None = None, port: int = 0) -> None:
        self.store = store or MetadataStore()
        self._srv = _Server(("127.0.0.1", port), _Handler)
        self._srv.store = self.store
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._srv.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoint_for(self, instance_id: str) -> str:
        return f"{self.base_url}/{instance_id}"

    def start(self) -> ImdsServer:
        self._thread = threading.Thread(target=self._srv.serve_forever, args=(0.05,), name="raylab-imds",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> ImdsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The HTTP face of the double: routing Kubernetes API paths to the store, injected faults, counters."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from tests.kube_double import errors
from tests.kube_double import resources as r
from tests.kube_double.endpoints import (
    Call,
    Reply,
    Target,
    discovery,
    failure,
    integer,
    not_found,
    parse_target,
    pod_log,
    scale,
    watch,
)
from tests.kube_double.knobs import Knobs
from tests.kube_double.kubelet import Kubelet
from tests.kube_double.store import APPLY, Store

logger = logging.getLogger(__name__)
_FAULT_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass
class RequestStats:
    """What clients asked for. Keys of `by_resource` are (verb, resource) like ("list", "pods")
    or ("get", "deployments.apps/scale"); requests answered with an injected fault count too."""

    by_verb: Counter[str] = field(default_factory=Counter)
    by_resource: Counter[tuple[str, str]] = field(default_factory=Counter)
    injected_errors: Counter[int] = field(default_factory=Counter)
    delayed_requests: int = 0
    internal_errors: list[str] = field(default_factory=list)


def _verb(method: str, target: Target, watching: bool) -> str:
    if target.name is None:
        verbs = {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}
    else:
        verbs = {"GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    return verbs.get(method, "unsupported")


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _delete_options(call: Call) -> dict[str, Any]:
    options = dict(call.body) if isinstance(call.body, dict) else {}
    if call.query.get("propagationPolicy"):
        options.setdefault("propagationPolicy", call.query["propagationPolicy"])
    if call.query.get("orphanDependents"):
        options.setdefault("orphanDependents", _flag(call.query["orphanDependents"]))
    return options


class ApiServer:
    def __init__(self, store: Store, kubelet: Kubelet, knobs: Knobs, seed: int) -> None:
        self.store, self.kubelet, self.knobs = store, kubelet, knobs
        self.stats = RequestStats()
        self.random = random.Random(seed)
        self.stopping = False
        self._stats_lock = threading.Lock()

    def handle(self, call: Call) -> Reply:
        try:
            found = discovery(call.segments)
            if found is not None:
                with self._stats_lock:
                    self.stats.by_verb["discovery"] += 1
                return found
            target = parse_target(call.segments)
            if target is None:
                raise not_found()
            verb = _verb(call.method, target, _flag(call.query.get("watch")))
            label = target.resource.key + (f"/{target.subresource}" if target.subresource else "")
            with self._stats_lock:
                self.stats.by_verb[verb] += 1
                self.stats.by_resource[(verb, label)] += 1
            fault = self._inject(verb)
            if fault is not None:
                return fault
            with self.store.dry_run(call.query.get("dryRun") == "All"):
                return self._dispatch(call, verb, target)
        except errors.KubeError as error:
            return failure(error)
        except Exception:
            with self._stats_lock:
                self.stats.internal_errors.append(
                    f"{call.method} /{'/'.join(call.segments)}\n{traceback.format_exc()}"
                )
            logger.exception("the Kubernetes API double failed on %s %s", call.method, call.segments)
            return failure(
                errors.KubeError(
                    500, "InternalError", "an error on the server has prevented the request from succeeding"
                )
            )

    def _inject(self, verb: str) -> Reply | None:
        if self.knobs.latency_seconds > 0:
            with self._stats_lock:
                self.stats.delayed_requests += 1
            time.sleep(self.knobs.latency_seconds)
        if self.knobs.error_rate <= 0 or (
            self.knobs.fault_verbs is not None and verb not in self.knobs.fault_verbs
        ):
            return None
        with self._stats_lock:
            if self.random.random() >= self.knobs.error_rate:
                return None
            code = self.random.choice(self.knobs.error_statuses)
            self.stats.injected_errors[code] += 1
        reason = _FAULT_REASONS.get(code, "InternalError")
        return failure(errors.KubeError(code, reason, f"injected fault: the server answered {code}"))

    def _dispatch(self, call: Call, verb: str, target: Target) -> Reply:
        query, resource, store = call.query, target.resource, self.store
        if target.subresource == "log" and resource is r.PODS and verb == "get":
            return pod_log(store, self.kubelet, target, query)
        if target.subresource == "scale" and resource.scale:
            return scale(store, verb, target, call)
        if target.subresource not in (None, "status") or (target.subresource and not resource.status):
            raise not_found()
        if verb == "watch":
            return watch(store, target, query, lambda: self.stopping)
        if verb == "list":
            return Reply(
                200,
                store.list(
                    resource,
                    target.namespace,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                    integer(query, "limit"),
                    query.get("continue") or "",
                ),
            )
        if verb == "create" and (target.namespace is not None or not resource.namespaced):
            return Reply(201, store.create(resource, target.scope, call.body, query.get("fieldManager")))
        if verb == "deletecollection" and resource is not r.NAMESPACES:
            return Reply(
                200,
                store.delete_collection(
                    resource,
                    target.namespace,
                    query.get("labelSelector"),
                    query.get("fieldSelector"),
                    _delete_options(call),
                ),
            )
        name = str(target.name)
        if verb == "get":
            return Reply(200, store.get(resource, target.scope, name))
        if verb == "update":
            return Reply(200, store.replace(resource, target.scope, name, call.body, target.subresource))
        if verb == "patch":
            content_type = call.content_type or "application/strategic-merge-patch+json"
            patched, created = store.patch(
                resource,
                target.scope,
                name,
                content_type,
                call.body,
                target.subresource,
                query.get("fieldManager"),
            )
            return Reply(201 if created else 200, patched)
        if verb == "delete" and target.subresource is None:
            deleted, code = store.delete(resource, target.scope, name, _delete_options(call))
            return Reply(code, deleted)
        raise errors.method_not_allowed("the server does not allow this method on the requested resource")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # replies are written in two parts; Nagle would hold the second ~40 ms
    server: _HttpServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request counters say what happened."""

    def _decode(self, content_type: str) -> Any:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not raw.strip():
            return None
        if content_type.startswith(APPLY):
            return yaml.safe_load(raw)
        return json.loads(raw)

    def _serve(self) -> None:
        url = urlsplit(self.path)
        content_type = self.headers.get("Content-Type") or ""
        try:
            body = self._decode(content_type)
        except (ValueError, yaml.YAMLError) as error:
            reply = failure(errors.bad_request(f"the request body could not be decoded: {error}"))
        else:
            call = Call(
                self.command,
                [s for s in url.path.split("/") if s],
                dict(parse_qsl(url.query)),
                content_type,
                body,
            )
            reply = self.server.api.handle(call)
        if reply.stream is not None:
            self._stream(reply)
            return
        if reply.text is not None:
            payload, media_type = reply.text.encode(), "text/plain; charset=utf-8"
        else:
            payload, media_type = json.dumps(reply.document).encode(), "application/json"
        self.send_response(reply.status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, reply: Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for line in reply.stream or ():
                data = line.encode()
                self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the watcher hung up

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ApiServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api = api


def serve(api: ApiServer) -> tuple[_HttpServer, threading.Thread]:
    """Listen on a free 127.0.0.1 port and serve in a background thread."""
    http = _HttpServer(api)
    thread = threading.Thread(
        target=http.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True, name="kube-double-http"
    )
    thread.start()
    return http, thread

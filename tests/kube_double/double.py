"""The double as a whole: store, controllers, kubelet and HTTP server, with the handle tests hold."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.kube_double import resources as r
from tests.kube_double.controllers import Controllers
from tests.kube_double.knobs import Clock, Knobs, NodePool
from tests.kube_double.kubelet import Kubelet
from tests.kube_double.scheduler import set_nodes
from tests.kube_double.server import ApiServer, RequestStats, serve
from tests.kube_double.store import Store

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class SettleError(RuntimeError):
    """The simulated cluster kept changing: a controller is fighting another, or a rule loops."""


class KubeDouble:
    """A Kubernetes API server on 127.0.0.1 with a simulated control plane behind it.

    `step()` runs every controller once; `settle()` steps until nothing changes, moving the double's clock
    over pending delays, so tests never sleep. A background loop also steps every `knobs.tick_seconds`
    so code that polls sees a live cluster; set `knobs.auto_step = False` to drive it only by hand.
    """

    def __init__(
        self, *, seed: int = 0, knobs: Knobs | None = None, nodes: tuple[NodePool, ...] = (NodePool(),)
    ):
        self.knobs = knobs or Knobs()
        self.clock = Clock()
        self.store = Store(self.clock, seed)
        self.kubelet = Kubelet(self.store, self.knobs, self.clock)
        self.controllers = Controllers(self.store, self.knobs, self.clock)
        self.api = ApiServer(self.store, self.kubelet, self.knobs, seed)
        self.loop_errors: list[str] = []
        for name in SYSTEM_NAMESPACES:
            self.store.create(r.NAMESPACES, "", {"metadata": {"name": name}})
        self.set_nodes(*nodes)
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.port = 0
        self._api_client: client.ApiClient | None = None

    # Lifecycle.

    def start(self) -> KubeDouble:
        self._http, http_thread = serve(self.api)
        self.port = self._http.server_address[1]
        loop = threading.Thread(target=self._background, daemon=True, name="kube-double-controllers")
        loop.start()
        self._threads = [http_thread, loop]
        return self

    def stop(self) -> None:
        self._stop.set()
        self.api.stopping = True
        if self._api_client is not None:
            self._api_client.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> KubeDouble:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig pointing at this double, for code that configures itself from one."""
        path.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: double\n"
            f"clusters: [{{name: double, cluster: {{server: '{self.url}'}}}}]\n"
            "users: [{name: nobody, user: {}}]\n"
            "contexts: [{name: double, context: {cluster: double, user: nobody}}]\n"
        )
        return path

    def configuration(self) -> client.Configuration:
        configuration = client.Configuration(host=self.url)
        configuration.verify_ssl = False
        return configuration

    def new_api_client(self) -> client.ApiClient:
        return client.ApiClient(self.configuration())

    @property
    def api_client(self) -> client.ApiClient:
        """One shared client for the double's lifetime; closed by `stop()`."""
        if self._api_client is None:
            self._api_client = self.new_api_client()
        return self._api_client

    # Driving the simulation.

    def _background(self) -> None:
        while not self._stop.wait(self.knobs.tick_seconds):
            if self.knobs.auto_step:
                try:
                    self.step()
                except Exception as error:  # keep the cluster alive; tests inspect loop_errors
                    self.loop_errors.append(repr(error))

    def step(self) -> bool:
        """Run every controller, the scheduler and the kubelet once; True if anything changed."""
        with self.store.lock:
            before = self.store.revision
            self.controllers.step()
            self.kubelet.step()
            return self.store.revision != before

    def next_due(self) -> float | None:
        with self.store.lock:
            due = [d for d in (self.kubelet.next_due(), self.controllers.next_due()) if d is not None]
            return min(due) if due else None

    def settle(self, *, advance_clock: bool = True, max_rounds: int = 1000) -> int:
        """Step until the cluster stops changing; returns the rounds taken.

        With `advance_clock`, pending delays (pod start, run time, job deadlines and TTLs) are skipped by
        moving the double's clock; without, only what is already due happens.
        """
        for rounds in range(1, max_rounds + 1):
            if self.step():
                continue
            due = self.next_due() if advance_clock else None
            if due is None:
                return rounds
            self.clock.advance_to(due)
        raise SettleError(f"the cluster was still changing after {max_rounds} rounds")

    def advance(self, seconds: float) -> None:
        """Move the double's clock forward without stepping."""
        self.clock.advance(seconds)

    # Knobs that need more than an attribute.

    def set_nodes(self, *pools: NodePool) -> None:
        """Replace the fake nodes, e.g. `set_nodes(NodePool(count=1, gpu=8, labels={...}))`."""
        set_nodes(self.store, pools)

    def reseed(self, seed: int) -> None:
        """Restart the fault-injection random sequence."""
        self.api.random.seed(seed)

    @property
    def stats(self) -> RequestStats:
        return self.api.stats

    def request_count(self, verb: str | None = None, resource: str | None = None) -> int:
        """Requests seen, optionally only one verb ("list") and/or resource ("pods", "deployments.apps")."""
        return sum(
            count
            for (seen_verb, seen_resource), count in self.stats.by_resource.items()
            if verb in (None, seen_verb) and resource in (None, seen_resource)
        )

    # Shortcuts for assertions: the store's view, bypassing HTTP, counters and faults.

    def objects(self, resource: r.ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                self.store.get(resource, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                for o in self.store.items(resource, namespace)
            ]

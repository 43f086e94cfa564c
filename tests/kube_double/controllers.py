"""The control loops, run in order on every step: namespaces, garbage collection, workloads, jobs,
volume claims and quotas. Each pass is idempotent: once the cluster has converged it writes nothing."""

from __future__ import annotations

import copy

from tests.kube_double import resources as r
from tests.kube_double.admission import namespace_usage
from tests.kube_double.jobs import JobController
from tests.kube_double.knobs import Clock, Knobs
from tests.kube_double.objects import ControllerBase, deleting, uid_of
from tests.kube_double.quantities import format_quantity, parse_quantity
from tests.kube_double.store import Store
from tests.kube_double.workloads import BACKGROUND, WorkloadControllers


class Controllers(ControllerBase):
    def __init__(self, store: Store, knobs: Knobs, clock: Clock) -> None:
        super().__init__(store, knobs, clock)
        self.workloads = WorkloadControllers(store, knobs, clock)
        self.jobs = JobController(store, knobs, clock)

    def step(self) -> None:
        self._namespaces()
        self._garbage_collect()
        self.workloads.step()
        self.jobs.step()
        self._claims()
        self._quotas()

    def next_due(self) -> float | None:
        return self.jobs.next_due()

    # Namespaces and garbage collection.

    def _namespaces(self) -> None:
        for namespace in self.store.items(r.NAMESPACES):
            if not deleting(namespace):
                continue
            name = namespace["metadata"]["name"]
            for resource in r.RESOURCES:
                if resource.namespaced:
                    for obj in self.store.items(resource, name):
                        self.store.remove(resource, obj)
            finalized = copy.deepcopy(namespace)
            finalized["spec"]["finalizers"] = []
            self.store.save(r.NAMESPACES, finalized)

    def _garbage_collect(self) -> None:
        everything = list(self.store.everything())
        alive = {uid_of(obj): obj for _, obj in everything}
        for resource, obj in everything:
            refs = obj["metadata"].get("ownerReferences") or []
            owners = [alive[ref["uid"]] for ref in refs if ref.get("uid") in alive]
            if refs and not owners and not deleting(obj):
                self._delete(resource, obj, BACKGROUND)
            elif len(owners) < len(refs):
                kept = copy.deepcopy(obj)
                kept["metadata"]["ownerReferences"] = [ref for ref in refs if ref.get("uid") in alive]
                self.store.save(resource, kept)
            elif any("foregroundDeletion" in (o["metadata"].get("finalizers") or []) for o in owners):
                self._delete(resource, obj, {"propagationPolicy": "Foreground"})
        for resource, obj in everything:
            finalizers = obj["metadata"].get("finalizers") or []
            if (
                deleting(obj)
                and "foregroundDeletion" in finalizers
                and not self.store.dependents(uid_of(obj))
            ):
                done = copy.deepcopy(obj)
                done["metadata"]["finalizers"] = [f for f in finalizers if f != "foregroundDeletion"]
                self.store.save(resource, done)

    # Claims and quotas.

    def _claims(self) -> None:
        for claim in self.store.items(r.PVCS):
            if (claim.get("status") or {}).get("phase") == "Bound" or deleting(claim):
                continue
            bound = copy.deepcopy(claim)
            bound["spec"]["volumeName"] = f"pvc-{uid_of(claim)}"
            bound["status"] = {
                "phase": "Bound",
                "accessModes": list(claim["spec"].get("accessModes") or []),
                "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
            }
            self.store.save(r.PVCS, bound)

    def _quotas(self) -> None:
        for quota in self.store.items(r.RESOURCE_QUOTAS):
            hard = dict((quota.get("spec") or {}).get("hard") or {})
            usage = namespace_usage(self.store, quota["metadata"]["namespace"])
            used = {key: format_quantity(usage.get(key, parse_quantity(0))) for key in hard}
            self._save_status(r.RESOURCE_QUOTAS, quota, {"hard": hard, "used": used})

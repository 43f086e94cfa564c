"""Every workload kind's monitoring routes (manual 5.4.2.2, 6.2.2): its pods' series as JSON, as an SVG
chart, and a short-lived link that opens the chart in a browser, added by the router factory under the kind's
`metrics_path` (the workload's one pod, or each of a cluster's pods).

This module does not use postponed annotations, for the same reason as api/workload_routes.py.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from api.deps import (
    CurrentUser,
    PathId,
    SessionDep,
    SettingsDep,
    active_user,
    get_current_token,
    get_current_user,
    oauth2_scheme,
)
from api.errors import ApiError
from api.security import hash_token
from models.accounts import User
from models.base import utcnow
from models.clusters import Cluster
from models.monitoring import MAIN_POD, ChartLink, ChartLinkAnswer, SeriesAnswer
from services import charts, monitoring
from services.access import readable
from services.errors import not_found
from services.kinds import WorkloadKind
from services.usage_periods import time_zone

CHART_LINK_LIFETIME = timedelta(minutes=30)
SVG = "image/svg+xml"
RangeQuery = Annotated[
    str,
    Query(
        alias="range",
        max_length=8,
        description="How far back from now: 1h to 24h (a cluster's pods: up to 30d), e.g. 6h, 90m, 7d",
    ),
]
TimeZoneQuery = Annotated[
    str | None,
    Query(
        max_length=64, description="IANA time zone for the chart's times; default: yours, else the platform's"
    ),
]
LinkQuery = Annotated[
    str | None,
    Query(max_length=128, description="A chart link's key (POST …/metrics.svg/link): opens this chart alone"),
]
PodName = Annotated[
    str,
    Path(pattern=r"^(launcher|worker-[0-9]{2,3})$", description="A cluster's pod: launcher, worker-00..."),
]


@dataclass(frozen=True)
class Target:
    project_id: str
    resource_id: str
    pod: str


def _workload_target(project_id: PathId, resource_id: PathId) -> Target:
    return Target(project_id, resource_id, MAIN_POD)


def _pod_target(project_id: PathId, resource_id: PathId, pod: PodName) -> Target:
    return Target(project_id, resource_id, pod)


def chart_viewer(
    request: Request,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
    link: LinkQuery = None,
) -> User:
    """The signed-in user; or, without a bearer token, whoever made the link, for that one chart."""
    if token or link is None:
        return get_current_user(session, get_current_token(session, token))
    row = session.get(ChartLink, hash_token(link))
    if row is None or row.path != request.url.path or row.expires_at <= utcnow():
        raise ApiError(401, "unauthorized", "the chart link is invalid or expired; ask for a new one", "link")
    return active_user(session, row.user_id, "link")


ChartViewer = Annotated[User, Depends(chart_viewer)]


def add_monitoring_routes(router: APIRouter, kind: WorkloadKind) -> None:
    TargetDep = Annotated[Target, Depends(_pod_target if "{pod}" in kind.metrics_path else _workload_target)]

    def series(session: Session, user: User, target: Target, span: str) -> tuple[Any, SeriesAnswer]:
        row, _ = readable(session, kind.table, kind.name, target.project_id, target.resource_id, user)
        if target.pod != MAIN_POD and not _has_pod(session, row, target.pod):
            raise not_found("pod", target.pod)
        length = monitoring.parse_range(span, kind.metrics_longest_range)
        return row, monitoring.series_of(session, row.id, target.pod, length, utcnow())

    def metrics(
        target: TargetDep, user: CurrentUser, session: SessionDep, span: RangeQuery = "6h"
    ) -> SeriesAnswer:
        return series(session, user, target, span)[1]

    def chart(
        target: TargetDep,
        user: ChartViewer,
        session: SessionDep,
        settings: SettingsDep,
        span: RangeQuery = "6h",
        tz: TimeZoneQuery = None,
    ) -> Response:
        row, answer = series(session, user, target, span)
        pod = "" if target.pod == MAIN_POD else f", pod {target.pod}"
        svg = charts.render_chart(
            answer,
            time_zone(tz or user.time_zone or settings.display_time_zone),
            f"{kind.name} {row.name} ({row.id}){pod}",
        )
        return Response(svg, media_type=SVG, headers={"Cache-Control": "no-store"})

    def link(
        request: Request,
        target: TargetDep,
        user: CurrentUser,
        session: SessionDep,
        settings: SettingsDep,
        span: RangeQuery = "6h",
        tz: TimeZoneQuery = None,
    ) -> ChartLinkAnswer:
        series(session, user, target, span)  # the same checks as the chart's, before anything is made
        if tz is not None:
            time_zone(tz)
        key = secrets.token_urlsafe(32)
        path = request.url.path.removesuffix("/link")
        expires_at = utcnow() + CHART_LINK_LIFETIME
        session.add(ChartLink(token_hash=hash_token(key), user_id=user.id, path=path, expires_at=expires_at))
        session.commit()
        query = {"range": span} | ({"tz": tz} if tz else {}) | {"link": key}
        return ChartLinkAnswer(url=f"{settings.public_url}{path}?{urlencode(query)}", expires_at=expires_at)

    router.add_api_route(
        f"{kind.metrics_path}/metrics",
        metrics,
        methods=["GET"],
        name=f"{kind.name}_metrics",
        response_model=SeriesAnswer,
        description="GPU %, GPU memory % (per GPU), vCPU % and memory % of what was requested, network "
        "in and out (B/s), averaged into steps that fit the range; a metric with no series says why in "
        "`unavailable`.",
    )
    router.add_api_route(
        f"{kind.metrics_path}/metrics.svg",
        chart,
        methods=["GET"],
        name=f"{kind.name}_metrics_chart",
        response_class=Response,
        responses={200: {"content": {SVG: {}}, "description": "An SVG chart, one panel per series"}},
        description="The same series as a chart, times in `tz`; with a bearer token or a chart `link`.",
    )
    router.add_api_route(
        f"{kind.metrics_path}/metrics.svg/link",
        link,
        methods=["POST"],
        name=f"{kind.name}_metrics_chart_link",
        response_model=ChartLinkAnswer,
        status_code=201,
        description="A link to this chart that a browser opens without signing in, for 30 minutes; it opens "
        "this chart only (any range and zone), as the user who asked for it.",
    )


def _has_pod(session: Session, row: Any, pod: str) -> bool:
    """A cluster's pod now, or one that was sampled before it was scaled in."""
    if isinstance(row, Cluster) and any(entry.get("name") == pod for entry in row.pods):
        return True
    return monitoring.has_samples(session, row.id, pod)

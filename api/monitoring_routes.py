"""Every workload kind's monitoring routes (manual 5.4.2.2, 6.2.2): its pods' series as JSON and as an SVG
chart, added by the router factory under the kind's `metrics_path`.

This module does not use postponed annotations, for the same reason as api/workload_routes.py.
"""

from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from sqlmodel import Session

from api.deps import CurrentUser, PathId, SessionDep, SettingsDep
from models.accounts import User
from models.base import utcnow
from models.clusters import Cluster
from models.monitoring import MAIN_POD, SeriesAnswer
from services import charts, monitoring
from services.access import readable
from services.errors import invalid, not_found
from services.kinds import WorkloadKind

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
    Query(max_length=64, description="IANA time zone for the chart's times; default MLCP_DISPLAY_TIME_ZONE"),
]
PodName = Annotated[
    str, Path(pattern=r"^(launcher|worker-[0-9]{2,3})$", description="launcher, worker-00...")
]
SVG = "image/svg+xml"


def time_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise invalid("tz", f"{name!r} is not an IANA time zone (e.g. Asia/Taipei, UTC)") from exc


def add_monitoring_routes(router: APIRouter, kind: WorkloadKind) -> None:
    def answer(
        session: Session, user: User, project_id: str, resource_id: str, pod: str, span: str
    ) -> tuple[Any, SeriesAnswer]:
        row, _ = readable(session, kind.table, kind.name, project_id, resource_id, user)
        if pod != MAIN_POD and not _has_pod(session, row, pod):
            raise not_found("pod", pod)
        length = monitoring.parse_range(span, kind.metrics_longest_range)
        return row, monitoring.series_of(session, row.id, pod, length, utcnow())

    def chart(row: Any, series: SeriesAnswer, tz: str) -> Response:
        title = f"{kind.name} {row.name} ({row.id})" + (
            "" if series.pod == MAIN_POD else f", pod {series.pod}"
        )
        svg = charts.render_chart(series, time_zone(tz), title)
        return Response(svg, media_type=SVG, headers={"Cache-Control": "no-store"})

    if "{pod}" in kind.metrics_path:

        async def pod_metrics(
            project_id: PathId,
            resource_id: PathId,
            pod: PodName,
            user: CurrentUser,
            session: SessionDep,
            span: RangeQuery = "6h",
        ) -> SeriesAnswer:
            return answer(session, user, project_id, resource_id, pod, span)[1]

        async def pod_chart(
            project_id: PathId,
            resource_id: PathId,
            pod: PodName,
            user: CurrentUser,
            session: SessionDep,
            settings: SettingsDep,
            span: RangeQuery = "6h",
            tz: TimeZoneQuery = None,
        ) -> Response:
            row, series = answer(session, user, project_id, resource_id, pod, span)
            return chart(row, series, tz or settings.display_time_zone)

        json_route, svg_route = pod_metrics, pod_chart
    else:

        async def metrics(
            project_id: PathId,
            resource_id: PathId,
            user: CurrentUser,
            session: SessionDep,
            span: RangeQuery = "6h",
        ) -> SeriesAnswer:
            return answer(session, user, project_id, resource_id, MAIN_POD, span)[1]

        async def metrics_chart(
            project_id: PathId,
            resource_id: PathId,
            user: CurrentUser,
            session: SessionDep,
            settings: SettingsDep,
            span: RangeQuery = "6h",
            tz: TimeZoneQuery = None,
        ) -> Response:
            row, series = answer(session, user, project_id, resource_id, MAIN_POD, span)
            return chart(row, series, tz or settings.display_time_zone)

        json_route, svg_route = metrics, metrics_chart  # type: ignore[assignment]

    router.add_api_route(
        f"{kind.metrics_path}/metrics",
        json_route,
        methods=["GET"],
        name=f"{kind.name}_metrics",
        response_model=SeriesAnswer,
        description="GPU %, GPU memory % (per GPU), vCPU % and memory % of what was requested, network "
        "in and out (B/s), averaged into steps that fit the range; a metric with no series says why in "
        "`unavailable`.",
    )
    router.add_api_route(
        f"{kind.metrics_path}/metrics.svg",
        svg_route,
        methods=["GET"],
        name=f"{kind.name}_metrics_chart",
        response_class=Response,
        responses={200: {"content": {SVG: {}}, "description": "An SVG chart, one panel per series"}},
        description="The same series as a chart to open in a browser, times in `tz`.",
    )


def _has_pod(session: Session, row: Any, pod: str) -> bool:
    """A cluster's pod now, or one that was sampled before it was scaled in."""
    if isinstance(row, Cluster) and any(entry.get("name") == pod for entry in row.pods):
        return True
    return monitoring.has_samples(session, row.id, pod)

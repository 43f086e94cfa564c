"""From a schedule row to its Temporal Schedule: the trigger's ScheduleSpec, the action and the policy.

Calendar triggers (monthly, weekly, daily) and cron expressions follow the schedule's time zone, so "daily
at 20:10 Asia/Taipei" stays 20:10 local time. Intervals ("every N hours") are counted from start_at when it
is given (Temporal counts them from the epoch otherwise), so "every 6 hours from 09:30" fires at 09:30,
15:30, ... whatever the time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from models.schedules import (
    Concurrency,
    CronTrigger,
    DailyTrigger,
    HoursTrigger,
    MinutesTrigger,
    MonthlyTrigger,
    ScheduledJobInput,
    Trigger,
    Weekday,
    WeeklyTrigger,
)
from models.schedules import (
    Schedule as ScheduleRow,
)
from services.errors import invalid
from workflows import search_attributes

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Temporal counts days of the week from Sunday = 0.
WEEKDAY_NUMBERS = {day: number for number, day in enumerate(Weekday)}
OVERLAP = {
    # Single-line: one fire waits (buffered) while the previous run's job is still running.
    Concurrency.single: ScheduleOverlapPolicy.BUFFER_ONE,
    Concurrency.multi: ScheduleOverlapPolicy.ALLOW_ALL,
}
NO_TEMPLATE_NOTE = "no job template attached yet"
_TRIGGER: TypeAdapter[Trigger] = TypeAdapter(Trigger)


def schedule_id(row_id: str) -> str:
    return f"schedule-{row_id}"


def run_workflow_id(row_id: str) -> str:
    """Temporal appends each fire's time to it, so every run has its own ID."""
    return f"scheduled-job-{row_id}"


def parse_trigger(raw: dict[str, Any], field: str = "trigger") -> Trigger:
    try:
        return _TRIGGER.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = ".".join([field, *(str(part) for part in error["loc"][1:])])
        raise invalid(path, str(error["msg"]).removeprefix("Value error, ")) from exc


def _at(text: str) -> tuple[tuple[ScheduleRange, ...], tuple[ScheduleRange, ...]]:
    hour, minute = (int(part) for part in text.split(":"))
    return (ScheduleRange(hour),), (ScheduleRange(minute),)


def _interval(every: timedelta, start_at: datetime | None) -> ScheduleIntervalSpec:
    if start_at is None:
        return ScheduleIntervalSpec(every=every)
    offset = (start_at - EPOCH) % every
    return ScheduleIntervalSpec(every=every, offset=offset or None)


def schedule_spec(
    trigger: Trigger, time_zone: str, start_at: datetime | None, end_at: datetime | None
) -> ScheduleSpec:
    calendars: list[ScheduleCalendarSpec] = []
    intervals: list[ScheduleIntervalSpec] = []
    cron: list[str] = []
    if isinstance(trigger, MonthlyTrigger):
        hour, minute = _at(trigger.at)
        calendars.append(
            ScheduleCalendarSpec(hour=hour, minute=minute, day_of_month=(ScheduleRange(trigger.day),))
        )
    elif isinstance(trigger, WeeklyTrigger):
        hour, minute = _at(trigger.at)
        day = ScheduleRange(WEEKDAY_NUMBERS[trigger.weekday])
        calendars.append(ScheduleCalendarSpec(hour=hour, minute=minute, day_of_week=(day,)))
    elif isinstance(trigger, DailyTrigger):
        hour, minute = _at(trigger.at)
        calendars.append(ScheduleCalendarSpec(hour=hour, minute=minute))
    elif isinstance(trigger, HoursTrigger):
        intervals.append(_interval(timedelta(hours=trigger.every), start_at))
    elif isinstance(trigger, MinutesTrigger):
        intervals.append(_interval(timedelta(minutes=trigger.every), start_at))
    elif isinstance(trigger, CronTrigger):
        cron.append(trigger.expression)
    return ScheduleSpec(
        calendars=calendars,
        intervals=intervals,
        cron_expressions=cron,
        start_at=start_at,
        end_at=end_at,
        time_zone_name=time_zone,
    )


def effective_pause(row: ScheduleRow) -> tuple[bool, str]:
    """A schedule without a template waits paused, whatever the person asked for."""
    if row.paused:
        return True, row.pause_note or "paused"
    if row.template_id is None:
        return True, NO_TEMPLATE_NOTE
    return False, ""


def temporal_schedule(row: ScheduleRow, task_queue: str) -> Schedule:
    paused, note = effective_pause(row)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "ScheduledJobWorkflow",
            ScheduledJobInput(schedule_id=row.id, project_id=row.project_id),
            id=run_workflow_id(row.id),
            task_queue=task_queue,
            typed_search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.PROJECT, row.project_id),
                    SearchAttributePair(search_attributes.OWNER, row.owner),
                    SearchAttributePair(search_attributes.KIND, "scheduled-job"),
                ]
            ),
            static_summary=f"Run of schedule “{row.name}” of {row.owner}",
        ),
        spec=schedule_spec(parse_trigger(row.trigger), row.time_zone, row.start_at, row.end_at),
        policy=SchedulePolicy(overlap=OVERLAP[row.concurrency]),
        state=ScheduleState(paused=paused, note=note or None),
    )


def schedule_search_attributes(row: ScheduleRow) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(search_attributes.PROJECT, row.project_id),
            SearchAttributePair(search_attributes.OWNER, row.owner),
            SearchAttributePair(search_attributes.KIND, "schedule"),
        ]
    )

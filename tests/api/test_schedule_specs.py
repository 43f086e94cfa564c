"""Triggers to Temporal ScheduleSpecs: calendars, intervals and cron in the schedule's time zone; bad input
raises a 422 naming the field. The last test asks the Temporal dev server for the next run times."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import ScheduleRange
from temporalio.testing import WorkflowEnvironment

from models.schedules import Concurrency, CronTrigger, Schedule, ScheduleCreate
from services.errors import Invalid
from services.schedule_specs import parse_trigger, schedule_spec, temporal_schedule


def spec_of(trigger: dict[str, Any], time_zone: str = "Asia/Taipei", **times: datetime | None) -> Any:
    return schedule_spec(parse_trigger(trigger), time_zone, times.get("start_at"), times.get("end_at"))


def test_calendar_triggers_fire_at_their_wall_clock_time_in_the_time_zone() -> None:
    daily = spec_of({"kind": "daily", "at": "20:10"})
    (calendar,) = daily.calendars
    assert (calendar.hour, calendar.minute, calendar.second) == (
        (ScheduleRange(20),),
        (ScheduleRange(10),),
        (ScheduleRange(0),),
    )
    assert calendar.day_of_month == (ScheduleRange(1, 31),) and calendar.day_of_week == (ScheduleRange(0, 6),)
    assert daily.time_zone_name == "Asia/Taipei" and not daily.intervals and not daily.cron_expressions

    (weekly,) = spec_of({"kind": "weekly", "weekday": "monday", "at": "08:00"}).calendars
    assert weekly.day_of_week == (ScheduleRange(1),) and weekly.hour == (ScheduleRange(8),)
    (sunday,) = spec_of({"kind": "weekly", "weekday": "sunday", "at": "00:05"}).calendars
    assert sunday.day_of_week == (ScheduleRange(0),) and sunday.minute == (ScheduleRange(5),)

    (monthly,) = spec_of({"kind": "monthly", "day": 31, "at": "23:59"}, "Europe/Berlin").calendars
    assert monthly.day_of_month == (ScheduleRange(31),) and monthly.month == (ScheduleRange(1, 12),)
    assert (monthly.hour, monthly.minute) == ((ScheduleRange(23),), (ScheduleRange(59),))


def test_intervals_count_from_the_start_and_the_window_passes_through() -> None:
    start = datetime(2027, 3, 1, 9, 30, tzinfo=UTC)
    end = start + timedelta(days=30)
    hours = spec_of({"kind": "every_hours", "every": 6}, start_at=start, end_at=end)
    (interval,) = hours.intervals
    assert interval.every == timedelta(hours=6) and interval.offset == timedelta(hours=3, minutes=30)
    assert (hours.start_at, hours.end_at) == (start, end) and not hours.calendars

    (minutes,) = spec_of({"kind": "every_minutes", "every": 90}, start_at=start).intervals
    assert minutes.every == timedelta(minutes=90) and minutes.offset == timedelta(minutes=30)
    (aligned,) = spec_of({"kind": "every_minutes", "every": 15}, start_at=start).intervals
    assert aligned.offset is None  # 09:30 is on a 15-minute boundary already
    (unanchored,) = spec_of({"kind": "every_hours", "every": 1}).intervals
    assert unanchored.offset is None


def test_cron_expressions_are_checked_and_kept_with_the_time_zone() -> None:
    spec = spec_of({"kind": "cron", "expression": "0  3 * * MON-FRI"}, "America/New_York")
    assert spec.cron_expressions == ["0 3 * * mon-fri"] and spec.time_zone_name == "America/New_York"
    for good in ("*/15 * * * *", "0 0 1,15 * *", "30 2 * jan,jul sun", "0 12 * * 7"):
        CronTrigger(kind="cron", expression=good)


def test_concurrency_maps_to_the_overlap_policy_and_no_template_keeps_it_paused() -> None:
    from temporalio.client import ScheduleOverlapPolicy

    row = Schedule(
        id="s1",
        project_id="p1",
        owner_id="u1",
        owner="bob",
        name="nightly",
        time_zone="UTC",
        trigger={"kind": "daily", "at": "01:00"},
        concurrency=Concurrency.single,
    )
    schedule = temporal_schedule(row, "mlcp")
    assert schedule.policy.overlap == ScheduleOverlapPolicy.BUFFER_ONE
    assert schedule.state.paused and schedule.state.note == "no job template attached yet"
    row.template_id, row.concurrency = "t1", Concurrency.multi
    schedule = temporal_schedule(row, "mlcp")
    assert schedule.policy.overlap == ScheduleOverlapPolicy.ALLOW_ALL and not schedule.state.paused


@pytest.mark.parametrize(
    ("trigger", "field"),
    [
        ({"kind": "daily", "at": "24:00"}, "trigger.at"),
        ({"kind": "daily", "at": "8:00"}, "trigger.at"),
        ({"kind": "weekly", "weekday": "funday", "at": "08:00"}, "trigger.weekday"),
        ({"kind": "monthly", "day": 32, "at": "08:00"}, "trigger.day"),
        ({"kind": "every_hours", "every": 0}, "trigger.every"),
        ({"kind": "every_minutes"}, "trigger.every"),
        ({"kind": "cron", "expression": "61 * * * *"}, "trigger.expression"),
        ({"kind": "cron", "expression": "* * * *"}, "trigger.expression"),
        ({"kind": "cron", "expression": "0 0 * foo *"}, "trigger.expression"),
        ({"kind": "yearly"}, "trigger"),
    ],
)
def test_a_bad_trigger_names_its_field(trigger: dict[str, Any], field: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_trigger(trigger)
    assert (raised.value.code, raised.value.field) == ("validation_error", field), raised.value.message


def test_time_zones_must_be_iana_names() -> None:
    base = {"name": "nightly", "trigger": {"kind": "daily", "at": "01:00"}}
    assert ScheduleCreate.model_validate({**base, "time_zone": "Asia/Taipei"}).time_zone == "Asia/Taipei"
    for bad in ("Mars/Olympus", "UTC+8", "../etc/passwd", ""):
        with pytest.raises(ValidationError) as raised:
            ScheduleCreate.model_validate({**base, "time_zone": bad})
        assert raised.value.errors()[0]["loc"] == ("time_zone",), bad


async def test_the_dev_server_fires_calendar_triggers_at_local_wall_clock_time(
    dev_server_env: WorkflowEnvironment,
) -> None:
    """Temporal's own next run times: 20:10 in Taipei is 12:10 UTC; 09:00 in New York moves with DST."""
    client = dev_server_env.client
    cases = [
        ("Asia/Taipei", {"kind": "daily", "at": "20:10"}, {(12, 10)}),
        ("America/New_York", {"kind": "daily", "at": "09:00"}, {(13, 0), (14, 0)}),
        ("Asia/Taipei", {"kind": "weekly", "weekday": "monday", "at": "00:30"}, {(16, 30)}),
    ]
    for time_zone, trigger, utc_times in cases:
        row = Schedule(
            id=uuid.uuid4().hex[:10],
            project_id="p1",
            owner_id="u1",
            owner="bob",
            name="probe",
            time_zone=time_zone,
            trigger=trigger,
            template_id="t1",
            concurrency=Concurrency.single,
        )
        schedule = temporal_schedule(row, "nobody-polls-" + row.id)
        # A year of daily runs crosses both DST changes; the spec alone decides the times listed.
        schedule.spec.start_at = datetime(2027, 1, 1, tzinfo=UTC)
        handle = await client.create_schedule(f"schedule-{row.id}", schedule)
        try:
            described = await handle.describe()
            times = described.info.next_action_times
            assert times, trigger
            assert {(t.astimezone(UTC).hour, t.astimezone(UTC).minute) for t in times} <= utc_times
            if trigger["kind"] == "weekly":
                # Monday 00:30 in Taipei is Sunday 16:30 UTC.
                assert {t.astimezone(UTC).weekday() for t in times} == {6}
        finally:
            await handle.delete()

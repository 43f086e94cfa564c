"""The rollup schedule's activities: 1-minute and hourly rollups of the samples, then pruning."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import Engine
from temporalio import activity

from activities import metric_store
from activities.heartbeat import heartbeating
from models.monitoring import Resolution


class RollupStep(BaseModel):
    resolution: Resolution
    now: datetime  # the workflow's time: a retried step computes the same buckets


class SampleActivities:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @activity.defn
    def roll_up_samples(self, step: RollupStep) -> int:
        """Whole buckets of this resolution recomputed; how many were written."""
        with heartbeating():
            return metric_store.roll_up(self._engine, step.resolution, step.now)

    @activity.defn
    def prune_samples(self, now: datetime) -> int:
        """Raw samples past 48 h and minute rollups past 30 days deleted; how many rows went."""
        with heartbeating():
            return metric_store.prune(self._engine, now)

"""One local workload's folder and the records in it; the layout is described in activities/local.py."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ValidationError

from activities.local_supervisor import (
    EVENTS_FILE,
    EXIT_FILE,
    LOG_FILE,
    PID_FILE,
    SPEC_FILE,
    append_event,
    write_atomically,
)
from models.workloads import RuntimeEvent, WorkloadSpec

ARCHIVE_FOLDER = "logs"
LAUNCHING_FILE = "launching"
CREDENTIALS_FOLDER = "credentials"
SERVICES_FILE = "services.json"  # what the container's services listen on (activities/local_services.py)
RESTORED_FILE = "restored"  # its image's files were unpacked into FILES_FOLDER
# A container's own files, apart from the runtime's records: its services' working and home folder, what a
# commit captures and what a container made from the image starts with.
FILES_FOLDER = "files"
TAIL_BLOCK_BYTES = 64 * 1024


class LaunchRecord(BaseModel):
    pid: int  # the supervisor's, which is also the process group's number
    start_ticks: int
    started_at: datetime
    gpus: list[str] = []
    deadline_seconds: int | None = None


class ExitRecord(BaseModel):
    """Written by the supervisor when the command ends, or by the runtime when it cannot start one."""

    exit_code: int | None
    reason: str = ""
    message: str = ""
    finished_at: datetime | None = None


def tail(path: Path, count: int) -> str:
    """The last ``count`` lines, read from the end so a large log costs no more than its tail."""
    if count <= 0:
        return ""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return ""
    with handle:
        position = handle.seek(0, os.SEEK_END)
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(TAIL_BLOCK_BYTES, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return b"".join(data.splitlines(keepends=True)[-count:]).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class WorkloadFolder:
    path: Path

    @property
    def log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def archived_log(self) -> Path:
        """Where the log stays once the workload is deleted, until its project is."""
        return self.path.parent / ARCHIVE_FOLDER / f"{self.path.name}.log"

    def exists(self) -> bool:
        return self.path.is_dir()

    def spec(self) -> WorkloadSpec | None:
        try:
            return WorkloadSpec.model_validate_json((self.path / SPEC_FILE).read_text())
        except FileNotFoundError:
            return None

    def launch(self) -> LaunchRecord | None:
        try:
            return LaunchRecord.model_validate_json((self.path / PID_FILE).read_text())
        except FileNotFoundError:
            return None

    def launching(self) -> LaunchRecord | None:
        """What an apply meant to start, written before it started it."""
        try:
            return LaunchRecord.model_validate_json((self.path / LAUNCHING_FILE).read_text())
        except FileNotFoundError:
            return None

    def finished(self) -> ExitRecord | None:
        try:
            return ExitRecord.model_validate_json((self.path / EXIT_FILE).read_text())
        except FileNotFoundError:
            return None

    def events(self) -> list[RuntimeEvent]:
        try:
            lines = (self.path / EVENTS_FILE).read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            with contextlib.suppress(ValidationError):  # a line cut short by a crash mid-write
                events.append(RuntimeEvent.model_validate_json(line))
        return events

    def write_spec(self, spec: WorkloadSpec) -> None:
        write_atomically(self.path / SPEC_FILE, spec.model_dump_json(indent=2))

    def write_launch(self, launch: LaunchRecord) -> None:
        write_atomically(self.path / PID_FILE, launch.model_dump_json())

    def write_launching(self, intent: LaunchRecord) -> None:
        write_atomically(self.path / LAUNCHING_FILE, intent.model_dump_json())

    def clear_launching(self) -> None:
        (self.path / LAUNCHING_FILE).unlink(missing_ok=True)

    def write_finished(self, record: ExitRecord) -> None:
        write_atomically(self.path / EXIT_FILE, record.model_dump_json())

    def add_event(self, event_type: str, reason: str, message: str) -> None:
        append_event(self.path, event_type, reason, message)

    def warn_once(self, reason: str, message: str) -> None:
        """A retried apply must not repeat the same warning line after line."""
        last = self.events()[-1:]
        if not last or (last[0].reason, last[0].message) != (reason, message):
            self.add_event("Warning", reason, message)

    def logs(self, count: int) -> str:
        return tail(self.log if self.exists() else self.archived_log, count)

    def last_log_line(self) -> str:
        lines = [line.strip() for line in tail(self.log, 5).splitlines()]
        return next((line for line in reversed(lines) if line), "")

    def archive_log(self) -> None:
        if self.log.exists():
            self.archived_log.parent.mkdir(exist_ok=True, mode=0o700)
            os.replace(self.log, self.archived_log)

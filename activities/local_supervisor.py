"""The process side of the local runtime: the supervisor of one workload, and the process-table reads.

Run as a script in a workload's folder (``python -I local_supervisor.py [--deadline SECONDS] -- COMMAND...``),
the supervisor leads the workload's own session and process group: it starts the command, enforces the
active deadline, records how the command ended in ``exit``, then clears whatever the command left in the
group, as the end of a container takes every process in it down. It imports only the standard library,
so it runs isolated (-I) from the workload's Python settings and outlives the worker that started it.

activities/local.py imports the file names and the process-table reads from here, so both sides agree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

SPEC_FILE = "spec.json"
LOG_FILE = "log"
PID_FILE = "pid"
EXIT_FILE = "exit"
EVENTS_FILE = "events.jsonl"

REASON_DEADLINE = "DeadlineExceeded"
DEADLINE_GRACE_SECONDS = 10.0  # between SIGTERM and SIGKILL once the deadline has passed
NOT_FOUND_EXIT_CODE = 127  # the shell's codes for a command it cannot find or cannot execute
NOT_EXECUTABLE_EXIT_CODE = 126
SIGNAL_EXIT_BASE = 128  # death by signal N reads as exit code 128 + N, as shells and Kubernetes report it
PROC = Path("/proc")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Readers see the old file or the new one, never half of one (created with `mode` from the start)."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(scratch, path)


def append_event(folder: Path, event_type: str, reason: str, message: str) -> None:
    line = json.dumps({"at": now_iso(), "type": event_type, "reason": reason, "message": message})
    with (folder / EVENTS_FILE).open("a", encoding="utf-8") as events:
        events.write(line + "\n")


@dataclass(frozen=True)
class ProcessInfo:
    state: str  # R, S, D...; Z is a zombie: ended, not yet reaped by its parent
    process_group: int
    start_ticks: int  # clock ticks after boot: with the PID it names one process for the host's uptime

    @property
    def ended(self) -> bool:
        return self.state in ("Z", "X", "x")


def process_info(pid: int) -> ProcessInfo | None:
    """What the process table says about a PID; None when no process holds it."""
    if not PROC.is_dir():
        return _portable_process_info(pid)
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself hold spaces and parentheses.
    fields = raw[raw.rindex(")") + 2 :].split()
    return ProcessInfo(state=fields[0], process_group=int(fields[2]), start_ticks=int(fields[19]))


def _portable_process_info(pid: int) -> ProcessInfo | None:
    # Without /proc the start time is unknown (0 on both sides of the comparison) and zombies look alive.
    try:
        return ProcessInfo(state="S", process_group=os.getpgid(pid), start_ticks=0)
    except OSError:
        return None


def group_members(process_group: int) -> list[int]:
    """PIDs in the group still running. Zombies do not count: some inits never reap orphans."""
    if not PROC.is_dir():
        try:
            os.killpg(process_group, 0)
        except OSError:
            return []
        return [process_group]
    members = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            info = process_info(int(entry.name))
            if info is not None and info.process_group == process_group and not info.ended:
                members.append(int(entry.name))
    return members


def process_environment(pid: int) -> dict[str, str]:
    """The environment a process started with; empty when it cannot be read (gone, another user's)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def labelled_groups(labels: dict[str, str]) -> list[int]:
    """Process groups led by a live process whose environment carries every one of `labels`.

    Workloads start with their project, kind and resource ID in their environment, as Kubernetes objects
    carry labels: what a lost record no longer names is still found by them.
    """
    if not PROC.is_dir():
        return []
    leaders = []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        info = process_info(pid)
        if info is None or info.ended or info.process_group != pid:
            continue
        environment = process_environment(pid)
        if all(environment.get(key) == value for key, value in labels.items()):
            leaders.append(pid)
    return leaders


def signal_group(process_group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process_group, signum)


def exit_code_of(returncode: int) -> int:
    # Popen reports death by signal N as -N.
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


class _DeadlineReached(Exception):
    pass


def _on_deadline(signum: int, frame: FrameType | None) -> None:
    raise _DeadlineReached


def _ignore(signum: int, frame: FrameType | None) -> None:
    """SIGTERM to the group is for the command; the supervisor stays to record how it ended."""


def _finish(folder: Path, record: dict[str, Any]) -> None:
    code = record["exit_code"]
    append_event(folder, "Normal" if code == 0 else "Warning", "Exited", f"exit code {code}")
    write_atomically(folder / EXIT_FILE, json.dumps({**record, "finished_at": now_iso()}))
    # The command's end takes down what it left running in the group, this supervisor included:
    # the record is written, so nothing is lost with it.
    signal_group(os.getpgrp(), signal.SIGKILL)


def supervise(command: list[str], deadline_seconds: float | None) -> None:
    folder = Path.cwd()
    signal.signal(signal.SIGTERM, _ignore)
    try:
        # Handlers set here reset to the default in the command at exec, so SIGTERM still ends it.
        child = subprocess.Popen(command)
    except OSError as exc:
        message = f"cannot run {command[0]}: {exc.strerror}"
        print(f"mlcp: {message}", file=sys.stderr, flush=True)
        code = NOT_FOUND_EXIT_CODE if isinstance(exc, FileNotFoundError) else NOT_EXECUTABLE_EXIT_CODE
        _finish(folder, {"exit_code": code, "reason": "", "message": message})
        return
    if deadline_seconds is not None:
        # An alarm rather than a polling wait: jobs run for days and the supervisor should sleep.
        signal.signal(signal.SIGALRM, _on_deadline)
        signal.setitimer(signal.ITIMER_REAL, deadline_seconds)
    try:
        returncode = child.wait()
        signal.setitimer(signal.ITIMER_REAL, 0)
    except _DeadlineReached:
        if child.returncode is None:
            _stop_at_deadline(folder, child, deadline_seconds or 0)
            return
        returncode = child.returncode
    _finish(folder, {"exit_code": exit_code_of(returncode), "reason": "", "message": ""})


def _stop_at_deadline(folder: Path, child: subprocess.Popen[bytes], deadline_seconds: float) -> None:
    append_event(
        folder, "Warning", REASON_DEADLINE, f"active deadline of {deadline_seconds:g} s passed; stopping it"
    )
    signal_group(os.getpgrp(), signal.SIGTERM)
    try:
        returncode = child.wait(timeout=DEADLINE_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        returncode = -signal.SIGKILL  # what the group's SIGKILL in _finish does to it
    message = f"killed after its active deadline of {deadline_seconds:g} s"
    _finish(folder, {"exit_code": exit_code_of(returncode), "reason": REASON_DEADLINE, "message": message})


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print("usage: local_supervisor.py [--deadline SECONDS] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    separator = argv.index("--")
    parser = argparse.ArgumentParser(prog="local_supervisor.py")
    parser.add_argument("--deadline", type=float, default=None)
    options = parser.parse_args(argv[:separator])
    command = argv[separator + 1 :]
    if not command:
        parser.error("no command after --")
    supervise(command, options.deadline)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

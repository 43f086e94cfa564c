"""Volume mounts on the local runtime: the workload's command runs inside bubblewrap, which sees the host's
filesystem with each volume's folder bind-mounted at its path (read-only where the mount says so).

The sandbox's root is its own: every top-level entry of the host's root is bound into it, so a mount at a
new top-level path (`/data`, `/volumes/...`) changes nothing on the host. A mount point missing inside an
existing host folder (`/mnt/x`) is made before the launch and removed again, if still empty, when the
workload goes; the list is kept in the workload's folder. Where bubblewrap cannot run (not installed, or
refused by the kernel), the workload gets a link at each path instead: it sees the files, but a read-only
mount is not enforced, and its `unsupported` says so.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MOUNT_POINTS_FILE = "mount-points.json"


@dataclass(frozen=True)
class HostMount:
    source: Path  # the volume's folder on this host
    target: str  # where the workload sees it
    read_only: bool


@functools.cache
def bubblewrap() -> str | None:
    """The bwrap binary if it can make a mount namespace here; None otherwise."""
    binary = shutil.which("bwrap")
    if binary is None:
        return None
    try:
        probe = subprocess.run(
            [binary, "--dev-bind", "/", "/", "--", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return binary if probe.returncode == 0 else None


def why_no_bubblewrap() -> str:
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
    return "bubblewrap cannot make a mount namespace on this host"


def _missing_parts(target: Path) -> list[Path]:
    """The folders of `target` that do not exist yet, outermost first."""
    missing = []
    for part in [*reversed(target.parents), target]:
        if not part.exists() and not part.is_symlink():
            missing.append(part)
    return missing


def prepare(folder: Path, mounts: list[HostMount], link: bool) -> list[Path]:
    """Make the mount points (or, without bubblewrap, links) and remember what was made."""
    made: list[Path] = []
    for mount in mounts:
        target = Path(mount.target)
        missing = _missing_parts(target)
        if not link and missing and missing[0].parent == Path("/"):
            continue  # bubblewrap makes it in the sandbox's own root
        for part in missing[:-1] if link else missing:
            part.mkdir()
            made.append(part)
        if link and missing:
            target.symlink_to(mount.source, target_is_directory=True)
            made.append(target)
    (folder / MOUNT_POINTS_FILE).write_text(json.dumps([str(path) for path in made]))
    return made


def clean_up(folder: Path) -> None:
    """Remove the mount points and links a launch made, innermost first, if nothing else is in them."""
    try:
        made = [Path(path) for path in json.loads((folder / MOUNT_POINTS_FILE).read_text())]
    except (FileNotFoundError, ValueError):
        return
    for path in reversed(made):
        with contextlib.suppress(OSError):
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()  # only when empty: a workload's files are never removed


def _host_root() -> list[str]:
    """The host's root, entry by entry, into the sandbox's own (links stay links)."""
    arguments: list[str] = []
    for entry in sorted(Path("/").iterdir()):
        if entry.is_symlink():
            arguments += ["--symlink", str(entry.readlink()), str(entry)]
        elif entry.name == "proc":
            arguments += ["--proc", "/proc"]
        else:
            arguments += ["--dev-bind", str(entry), str(entry)]
    return arguments


def wrapped(
    command: list[str], mounts: list[HostMount], workdir: str | None, hostname: str | None = None
) -> list[str]:
    """The command inside bubblewrap with the mounts, and in a UTS namespace of its own when it is given a
    host name (a training cluster's pod); as it is when there is nothing to do or no bubblewrap."""
    binary = bubblewrap()
    if binary is None or not (mounts or hostname):
        return command
    arguments = [binary, "--die-with-parent", *_host_root()]
    if hostname:
        arguments += ["--unshare-uts", "--hostname", hostname]
    for mount in mounts:
        arguments += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.target]
    if workdir:
        arguments += ["--chdir", workdir]
    return [*arguments, "--", *command]

"""Named fault points for the crash tests: `HEADCAP_KILL_AT=<command>:<point>` makes the process
SIGKILL itself when it reaches that point of a commit sequence, `HEADCAP_STOP_AT=<command>:<point>`
makes it SIGSTOP itself there (a test holds a run still at a known point, e.g. with its lock
taken, and resumes it with SIGCONT). docs/reliability.md lists the points. The pipeline runner has
its own variable, HEADCAP_PIPELINE_KILL_AT=<stage>:<point>."""
from __future__ import annotations

import os
import signal

KILL_ENV = "HEADCAP_KILL_AT"
STOP_ENV = "HEADCAP_STOP_AT"


def kill_point(command: str, point: str) -> None:
    """SIGKILL (or SIGSTOP) this process if HEADCAP_KILL_AT (HEADCAP_STOP_AT) names
    `command:point`; a no-op otherwise."""
    here = f"{command}:{point}"
    if os.environ.get(KILL_ENV) == here:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_ENV) == here:
        os.kill(os.getpid(), signal.SIGSTOP)

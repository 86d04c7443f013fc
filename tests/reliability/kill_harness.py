"""A fork server for the kill -9 campaign: one Python process imports headcap once, then forks a
child per command (`headcap.cli.main(argv)` with its own environment), so dozens of runs to be
killed cost milliseconds to start instead of seconds. The parent never computes (torch, OpenMP
and BLAS stay untouched before the fork).

    with ForkServer() as server:
        r = server.run(["synth", "--out", ...], env={"HEADCAP_KILL_AT": "synth:renamed"})
        r = server.run([...], kill_after=0.4)      # SIGKILL 0.4 s after the fork (if still running)
        pid = server.start([...]); ...; r = server.wait(pid)

A result: {"pid", "exit" (code, or None when killed), "signal", "seconds", "log" (the child's
stdout + stderr)}.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ForkServer:
    def __init__(self, log_dir: Path | None = None):
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="headcap-kill-"))
        self.proc: subprocess.Popen | None = None
        self.count = 0

    def __enter__(self) -> "ForkServer":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, bufsize=1)
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"fork server did not start: {ready!r}")
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "log" in reply:
            reply["log"] = Path(reply["log"]).read_text(errors="replace")
        return reply

    def start(self, argv: list[str], env: dict | None = None, cwd: str | None = None) -> int:
        self.count += 1
        log = str(self.log_dir / f"run{self.count:03d}.log")
        return self._ask({"op": "start", "argv": argv, "env": env or {}, "cwd": cwd, "log": log})["pid"]

    def wait(self, pid: int, kill_after: float | None = None, timeout: float = 300) -> dict:
        return self._ask({"op": "wait", "pid": pid, "kill_after": kill_after, "timeout": timeout})

    def run(self, argv: list[str], env: dict | None = None, kill_after: float | None = None,
            cwd: str | None = None, timeout: float = 300) -> dict:
        return self.wait(self.start(argv, env, cwd), kill_after, timeout)


def _serve() -> None:
    import traceback

    import headcap.capture.ingest  # noqa: F401 - imported once, before any fork
    import headcap.commands.calibrate  # noqa: F401
    import headcap.demo  # noqa: F401
    import headcap.pipeline.chain  # noqa: F401
    import headcap.studio.synthesize  # noqa: F401
    from headcap.cli import main

    logs: dict[int, str] = {}
    started: dict[int, float] = {}
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            pid = os.fork()
            if pid == 0:  # the child: run the command, never return to the loop
                code = 98
                try:
                    os.dup2(fd, 1)
                    os.dup2(fd, 2)
                    os.environ.update(request["env"])
                    if request.get("cwd"):
                        os.chdir(request["cwd"])
                    code = main(request["argv"])
                except BaseException:  # noqa: BLE001
                    traceback.print_exc()
                    code = 99
                finally:
                    try:
                        sys.stdout.flush()
                        sys.stderr.flush()
                    finally:
                        os._exit(code if isinstance(code, int) else 97)
            os.close(fd)
            logs[pid], started[pid] = request["log"], time.monotonic()
            out.write(json.dumps({"pid": pid}) + "\n")
        else:
            pid = request["pid"]
            kill_after, timeout = request.get("kill_after"), request.get("timeout") or 300
            t0 = started[pid]
            status = None
            while True:
                done, st = os.waitpid(pid, os.WNOHANG)
                if done:
                    status = st
                    break
                now = time.monotonic() - t0
                if kill_after is not None and now >= kill_after or now > timeout:
                    os.kill(pid, signal.SIGKILL)
                    _, status = os.waitpid(pid, 0)
                    break
                time.sleep(0.003)
            reply = {"pid": pid, "seconds": time.monotonic() - t0, "log": logs.pop(pid),
                     "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                     "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}
            out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve()

"""The load-balancer node's HAProxy: runs and supervises it (master-worker), and moves it towards
the desired listeners and targets through its runtime API; reports target health and sessions.

Level-triggered, every ``POLL`` seconds and on each new desired document:

1. HAProxy not running -> write the configuration (listeners, groups, the targets known
   healthy) and start it; a master left by an earlier agent (pid file + answering socket) is
   adopted, so restarting the agent drops nothing.
2. Listeners or groups changed -> write the file and reload: the master starts a new worker
   that takes the listening sockets over (``expose-fd listeners``), the old one finishes its
   connections. Targets never need a reload.
3. ``show stat`` -> agent.lb.plan.commands -> runtime API; agent.lb.plan.reports -> status.

Everything lives under ``--lb-dir``: haproxy.cfg, admin.sock (level admin), master.sock,
haproxy.pid, haproxy.log.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.lb import config, plan
from dockyard.lb import LbDesired, LbStatus, LbTarget, ListenerReport

POLL = 0.25  # seconds between show-stat polls (a drained target is noticed within this)
HAPROXY = os.environ.get("DOCKYARD_HAPROXY", "haproxy")


class HAProxyError(RuntimeError):
    pass


class HAProxy:
    """The process and its two sockets."""

    def __init__(self, directory: Path, log: Any) -> None:
        self.dir = directory
        self.log = log
        self.cfg = directory / "haproxy.cfg"
        self.admin = directory / "admin.sock"
        self.master = directory / "master.sock"
        self.pid_file = directory / "haproxy.pid"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def paths(self) -> config.Paths:
        return config.Paths(admin_socket=str(self.admin), pid_file=str(self.pid_file))

    def master_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    async def running(self) -> bool:
        if self.proc is not None and self.proc.returncode is not None:
            self.proc = None
        if self.master_pid() is None:
            return False
        try:
            await self.command("show info", timeout=1.0)
            return True
        except (TimeoutError, OSError, HAProxyError):
            return False

    async def start(self) -> None:
        out = open(self.dir / "haproxy.log", "ab")  # noqa: SIM115, ASYNC230 - handed to the child, opened once
        try:
            self.proc = await asyncio.create_subprocess_exec(
                HAPROXY, "-W", "-S", f"{self.master},mode,600", "-f", str(self.cfg),
                stdout=out, stderr=out, start_new_session=True)  # survives the agent: restarts adopt it
        finally:
            out.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise HAProxyError(f"haproxy exited with {self.proc.returncode}; see {self.dir / 'haproxy.log'}")
            if await self.running():
                return
            await asyncio.sleep(0.05)
        raise HAProxyError("haproxy did not answer on its admin socket within 5 s")

    async def reload(self) -> None:
        """Seamless: the master re-executes, the new worker inherits the listening sockets."""
        pid = self.master_pid()
        if pid is None:
            raise HAProxyError("no haproxy master to reload")
        before = await self._worker_pid()
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            with contextlib.suppress(OSError, HAProxyError, asyncio.TimeoutError):
                now = await self._worker_pid()
                if now is not None and now != before:
                    return
        raise HAProxyError(f"haproxy reload did not bring up a new worker; see {self.dir / 'haproxy.log'}")

    async def _worker_pid(self) -> int | None:
        for line in (await self.command("show info", timeout=1.0)).splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":", 1)[1])
        return None

    async def command(self, cmd: str, timeout: float = 2.0) -> str:
        """One runtime-API command on the admin socket (HAProxy closes after answering)."""
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.admin)), timeout)
        try:
            writer.write(cmd.encode() + b"\n")
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), timeout)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        return data.decode(errors="replace")

    async def stop(self) -> None:
        pid = self.master_pid()
        if pid is not None:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGUSR1)  # soft stop: finish connections


def port_free(bind: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((bind if bind not in ("*", "") else "0.0.0.0", port))
            return True
        except OSError:
            return False


class LoadBalancerNode:
    """The loop of a --load-balancer agent. ``on_change`` is called when the status changed."""

    def __init__(self, directory: Path, bind: str, log: Any, on_change: Callable[[], None]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self.hap = HAProxy(directory, log)
        self.bind, self.log, self.on_change = bind, log, on_change
        self.desired = LbDesired()
        self.received = False  # a desired document has come (until then an adopted HAProxy is left alone)
        self.wake = asyncio.Event()
        self._structure: str | None = None  # of the running configuration
        self._ports: set[int] = set()  # listener ports of the running configuration
        self._failed: dict[int, str] = {}  # listener port -> why it is not served
        self.healthy_seen: set[tuple[str, str]] = set()  # (target group, target id) once UP
        self._status = LbStatus()
        self._sent: str = ""

    def set_desired(self, d: LbDesired | None) -> None:
        self.desired = d or LbDesired()
        self.received = True
        self.wake.set()

    def status(self) -> LbStatus:
        return self._status

    def _serving(self) -> LbDesired:
        """The desired listeners minus those whose port another process holds (reported)."""
        keep = []
        for ls in self.desired.listeners:
            if ls.port not in self._ports and not port_free(self.bind, ls.port):
                self._failed[ls.port] = f"port {ls.port} is in use on this node"
                continue
            self._failed.pop(ls.port, None)
            keep.append(ls)
        return self.desired.model_copy(update={"listeners": keep})

    def _write(self, serving: LbDesired) -> None:
        known: dict[str, list[LbTarget]] = {
            tg.name: [t for t in tg.targets if (tg.name, t.id) in self.healthy_seen] for tg in serving.targetGroups}
        text = config.render(serving, self.hap.paths, self.bind, known)
        tmp = self.hap.cfg.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.hap.cfg)

    async def pass_once(self) -> None:
        if not self.received:
            # A restarted agent before the broker delivered its desired document: an HAProxy the
            # earlier agent left keeps serving as it was. Adopting it against the empty default
            # reloaded it without listeners: every request failed until the document came (and
            # the reload back took up to 10 s more) -- issue 16, an LB agent SIGKILLed.
            return
        hap = self.hap
        if self._structure is None and await hap.running():
            # Adopting an earlier agent's HAProxy: the ports it listens on are ours, not "in use by
            # another process" (that dropped them from the adopted configuration: a reload without
            # them refused connections until the next pass put them back).
            self._ports |= plan.frontend_ports(await hap.command("show stat -1 1 -1"))
        serving = self._serving()
        structure = config.structure(serving)
        if not await hap.running():
            if not serving.listeners and not self.desired.targetGroups:
                self._status = LbStatus(listeners=[ListenerReport(port=p, ok=False, error=e) for p, e in self._failed.items()])
                return  # nothing to serve yet
            self._write(serving)
            await hap.start()
            self.log.info("haproxy started", pid=hap.master_pid(), listeners=[ls.port for ls in serving.listeners])
            self._structure = structure
        elif self._structure is None:
            # Adopted a master an earlier agent started: its UP servers are known healthy, and it
            # is reloaded only if what it serves differs from the desired document.
            live = plan.parse_stat(await hap.command("show stat -1 4 -1"))
            self.healthy_seen |= {(be.removeprefix("tg_"), name) for (be, name), srv in live.items() if srv.state == "UP"}
            before = hap.cfg.read_text() if hap.cfg.exists() else ""
            self._write(serving)
            if hap.cfg.read_text() != before:
                await hap.reload()
            self.log.info("haproxy adopted", pid=hap.master_pid(), reloaded=hap.cfg.read_text() != before)
            self._structure = structure
        elif structure != self._structure:
            self._write(serving)
            await hap.reload()
            self.log.info("haproxy reloaded", listeners=[ls.port for ls in serving.listeners])
            self._structure = structure
        self._ports = {ls.port for ls in serving.listeners}
        live = plan.parse_stat(await hap.command("show stat -1 4 -1"))
        for cmd in plan.commands(serving, live):
            answer = (await hap.command(cmd)).strip()
            if answer and not answer.startswith(("New server registered", "Server deleted")):
                self.log.debug("haproxy command", command=cmd, answer=answer[:200])
        if any(True for _ in plan.commands(serving, live)):
            live = plan.parse_stat(await hap.command("show stat -1 4 -1"))
        reports = plan.reports(serving, live, self.healthy_seen)
        self.healthy_seen |= {(r.targetGroup, r.id) for r in reports if r.health == "healthy"}
        listeners = [ListenerReport(port=ls.port, ok=ls.port not in self._failed, error=self._failed.get(ls.port))
                     for ls in self.desired.listeners]
        self._status = LbStatus(targets=reports, listeners=listeners, running=True)
        dump = self._status.model_dump_json()
        if dump != self._sent:
            self._sent = dump
            self.on_change()

    async def run(self) -> None:
        while True:
            try:
                await self.pass_once()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - retried next pass; HAProxy keeps serving meanwhile
                self.log.error("load balancer pass failed; retrying", error=f"{type(e).__name__}: {e}")
                self._structure = None if not await self.hap.running() else self._structure
                if self._status.running:
                    self._status = self._status.model_copy(update={"running": await self.hap.running()})
                await asyncio.sleep(0.5)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wake.wait(), POLL)
            self.wake.clear()

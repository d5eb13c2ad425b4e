"""HAProxy's configuration file for a load-balancer node, rendered from its LbDesired (pure).

Listeners become frontends, target groups backends (roundrobin, so servers can be added at
run time), rules ``use_backend`` lines in priority order. The file also lists the targets
already known healthy, so a restarted HAProxy comes back serving them; new targets are only
ever added through the runtime API (disabled, health forced down, then checked), never by a
reload, because a server from the file starts UP before its first check.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dockyard.lb import LbDesired, LbListener, LbTarget, LbTargetGroup

MS = 1000


@dataclass(frozen=True)
class Paths:
    admin_socket: str
    pid_file: str


def backend_name(tg: str) -> str:
    return f"tg_{tg}"


def frontend_name(port: int) -> str:
    return f"ls_{port}"


def glob_regex(pattern: str) -> str:
    """ELB's wildcards (``*``, ``?``) as an anchored regex HAProxy accepts (no spaces)."""
    out = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return "^" + out.replace(" ", "\\x20") + "$"


def check_args(tg: LbTargetGroup) -> str:
    hc = tg.healthCheck
    args = (f"check inter {hc.intervalSeconds * MS} fall {hc.unhealthyThresholdCount} "
            f"rise {hc.healthyThresholdCount} pool-purge-delay 1s")
    if hc.port != "traffic-port":
        args += f" port {hc.port}"
    if tg.slowStart:
        args += f" slowstart {tg.slowStart}s"
    return args


def server_line(tg: LbTargetGroup, t: LbTarget) -> str:
    line = f"    server {t.id} {t.address}:{t.port} {check_args(tg)}"
    return line + (" weight 0" if t.state == "draining" else "")


def _forward(forward: list[tuple[str, int]], cond: str, var: str) -> list[str]:
    """use_backend lines for a (weighted) forward action, under the ACLs ``cond`` ("" = always)."""
    live = [(name, w) for name, w in forward if w > 0]
    when = f" if {cond}" if cond else ""
    if len(live) == 1:
        return [f"    use_backend {backend_name(live[0][0])}{when}"]
    total, acc = sum(w for _, w in live), 0
    setter = "http-request" if var.startswith("txn") else "tcp-request content"
    out = [f"    {setter} set-var({var}) rand({total}){when}"]
    for i, (name, w) in enumerate(live):
        lo, acc = acc, acc + w
        pick = f"{{ var({var}) -m int ge {lo} }}" + (f" {{ var({var}) -m int lt {acc} }}" if i < len(live) - 1 else "")
        out.append(f"    use_backend {backend_name(name)} if {cond + ' ' if cond else ''}{pick}")
    return out


def frontend(ls: LbListener, bind: str) -> list[str]:
    mode = "http" if ls.protocol == "HTTP" else "tcp"
    lines = [f"frontend {frontend_name(ls.port)}", f"    mode {mode}", f"    bind {bind}:{ls.port}"]
    if mode == "tcp":
        lines.append("    tcp-request inspect-delay 0s")
    var = "txn.w" if mode == "http" else "sess.w"
    switching: list[str] = []
    for r in ls.routes:
        acls = []
        if r.hosts:
            name = f"r{r.priority}_host"
            lines.append(f"    acl {name} req.hdr(host),lower,field(1,:) -m reg "
                         + " ".join(glob_regex(h.lower()) for h in r.hosts))
            acls.append(name)
        if r.paths:
            name = f"r{r.priority}_path"
            lines.append(f"    acl {name} path -m reg " + " ".join(glob_regex(p) for p in r.paths))
            acls.append(name)
        switching += _forward(r.forward, " ".join(acls), var)
    default = [(n, w) for n, w in ls.default if w > 0]
    if len(default) == 1:
        switching.append(f"    default_backend {backend_name(default[0][0])}")
    else:
        switching += _forward(default, "", var)
    # set-var rules are processed before the switching rules: list them first, as HAProxy wants.
    return lines + [x for x in switching if "set-var" in x] + [x for x in switching if "set-var" not in x]


def backend(tg: LbTargetGroup, servers: Iterable[LbTarget]) -> list[str]:
    mode = "http" if tg.protocol == "HTTP" else "tcp"
    lines = [f"backend {backend_name(tg.name)}", f"    mode {mode}", "    balance roundrobin",
             "    option redispatch", "    retries 3"]
    hc = tg.healthCheck
    lines.append(f"    timeout check {hc.timeoutSeconds * MS}")
    if (hc.protocol or tg.protocol) == "HTTP":
        lines.append(f"    option httpchk GET {hc.path}")
        codes = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in _codes(hc.matcher.httpCode)]
        if codes == [codes[0]] and "-" not in codes[0]:
            lines.append(f"    http-check expect status {codes[0]}")
        else:
            lines.append(f"    http-check expect rstatus {_code_regex(hc.matcher.httpCode)}")
    if mode == "http":
        lines.append("    retry-on conn-failure empty-response response-timeout")
    lines += [server_line(tg, t) for t in servers]
    return lines


def _codes(spec: str) -> list[tuple[int, int]]:
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.append((int(lo), int(hi or lo)))
    return out


def _code_regex(spec: str) -> str:
    return "^(" + "|".join(str(c) for lo, hi in _codes(spec) for c in range(lo, hi + 1)) + ")$"


def render(desired: LbDesired, paths: Paths, bind: str, servers: Mapping[str, Iterable[LbTarget]]) -> str:
    """The whole file. ``servers``: per target group, the targets to list (the known-healthy ones)."""
    lines = [
        "# Written by the dockyard agent; changes are overwritten.",
        "global",
        "    master-worker",
        f"    stats socket {paths.admin_socket} mode 600 level admin expose-fd listeners",
        f"    pidfile {paths.pid_file}",
        "    hard-stop-after 1h",
        "    log stdout format raw local0 notice",
        "",
        "defaults",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",  # failed or retried requests only, into haproxy.log
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-keep-alive 10s",
        "    timeout queue 30s",
        "    option http-keep-alive",
        # On a reload the old worker answers each idle keep-alive connection's next request with
        # "Connection: close" instead of closing it under a request already on its way (HAProxy >= 2.4
        # closes idle ones at once, which a client that does not retry sees as an error).
        "    option idle-close-on-response",
        "",
    ]
    for ls in desired.listeners:
        lines += frontend(ls, bind) + [""]
    for tg in desired.targetGroups:
        lines += backend(tg, servers.get(tg.name, ())) + [""]
    if not desired.listeners:
        # HAProxy needs a proxy to start: an inert one keeps the process (and its socket) up.
        idle = paths.admin_socket.rsplit("/", 1)[0] + "/idle.sock"
        lines += ["frontend dockyard_idle", "    mode tcp", f"    bind unix@{idle}", "    tcp-request content reject", ""]
    return "\n".join(lines)


def structure(desired: LbDesired) -> str:
    """Everything a reload is needed for (listeners, groups, their settings): not the targets."""
    d = desired.model_copy(update={"targetGroups": [tg.model_copy(update={"targets": []}) for tg in desired.targetGroups]})
    return d.model_dump_json()

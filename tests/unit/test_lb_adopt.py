"""A restarted load-balancer agent adopts the HAProxy its predecessor left (agent.lb.haproxy):
only once its desired document has come, never against the empty default (issue 16: an LB
agent SIGKILLed and restarted reloaded HAProxy without listeners, failing every request until
the document came)."""
from __future__ import annotations

from agent.lb import haproxy, plan
from agent.lb.haproxy import LoadBalancerNode
from test_lb_plan import STAT, desired, target

FRONTENDS = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status
ls_8080,FRONTEND,,,1,3,2000,40,0,0,0,0,0,,,,,OPEN
dockyard_idle,FRONTEND,,,0,0,2000,0,0,0,0,0,0,,,,,OPEN
"""


class Log:
    def info(self, *a: object, **kw: object) -> None: ...
    debug = error = warning = info


class AdoptedHAProxy:
    """A master an earlier agent started: running, answering, serving t1 (UP)."""

    def __init__(self, hap) -> None:  # noqa: ANN001 - the real one, for its paths and cfg file
        self.cfg, self.paths = hap.cfg, hap.paths
        self.reloads = 0
        self.commands: list[str] = []

    async def running(self) -> bool:
        return True

    def master_pid(self) -> int:
        return 4242

    async def reload(self) -> None:
        self.reloads += 1

    async def command(self, cmd: str, timeout: float = 2.0) -> str:
        self.commands.append(cmd)
        if cmd.startswith("show stat -1 1"):
            return FRONTENDS
        return STAT if cmd.startswith("show stat") else ""


def test_frontend_ports_are_the_listeners_frontends():
    assert plan.frontend_ports(FRONTENDS) == {8080}
    assert plan.frontend_ports("") == set()


async def test_an_adopted_haproxy_is_left_serving_until_the_desired_document_comes(tmp_path, monkeypatch):
    monkeypatch.setattr(haproxy, "port_free", lambda bind, port: False)  # the adopted HAProxy holds 8080
    node = LoadBalancerNode(tmp_path, "0.0.0.0", Log(), lambda: None)
    hap = node.hap = AdoptedHAProxy(node.hap)  # type: ignore[assignment]
    before = "# the earlier agent's configuration: listener 8080, backend tg_web\n"
    hap.cfg.write_text(before)
    await node.pass_once()  # no desired document yet
    assert hap.cfg.read_text() == before and hap.reloads == 0 and hap.commands == []
    node.set_desired(desired(target(1)))
    await node.pass_once()  # now adopted: written and reloaded against the document
    # ... keeping its listener: the port is held by the adopted HAProxy itself, not "in use".
    assert "frontend ls_8080" in hap.cfg.read_text() and node._failed == {}
    assert hap.reloads == 1
    assert ("web", "t1_80") in node.healthy_seen  # UP in the adopted master: known healthy


async def test_a_document_without_load_balancers_still_empties_an_adopted_haproxy(tmp_path):
    node = LoadBalancerNode(tmp_path, "0.0.0.0", Log(), lambda: None)
    hap = node.hap = AdoptedHAProxy(node.hap)  # type: ignore[assignment]
    hap.cfg.write_text("# listener 8080\n")
    node.set_desired(None)  # the orchestrator says: nothing to serve
    await node.pass_once()
    assert hap.reloads == 1 and "8080" not in hap.cfg.read_text()

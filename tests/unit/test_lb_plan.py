"""The LB node's decisions (agent.lb.plan) and HAProxy configuration (agent.lb.config), pure."""
from __future__ import annotations

from agent.lb import config, plan
from dockyard.lb import LbDesired, LbListener, LbRoute, LbTarget, LbTargetGroup, TargetGroupHealthCheck

HC = TargetGroupHealthCheck(path="/health", intervalSeconds=5, timeoutSeconds=2, healthyThresholdCount=2)


def desired(*targets: LbTarget, listeners: list[LbListener] | None = None) -> LbDesired:
    return LbDesired(listeners=listeners or [LbListener(loadBalancer="front", port=8080, protocol="HTTP", default=[("web", 1)])],
                     targetGroups=[LbTargetGroup(name="web", protocol="HTTP", healthCheck=HC, targets=list(targets))])


def target(i: int, state: str = "active") -> LbTarget:
    return LbTarget(id=f"t{i}_80", taskId=f"t{i}", address="10.0.0.2", port=49200 + i, state=state)  # type: ignore[arg-type]


def live(name: str, status: str, sessions: int = 0, fails: int = 0, check: str = "L7OK") -> dict:
    return {("tg_web", name): plan.LiveServer("tg_web", name, status, sessions, fails, check)}


STAT = """# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code
tg_web,t1_80,0,0,3,5,,10,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,5,0,,1,3,1,,10,,2,0,,2,L7OK,200
tg_web,t2_80,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN 1/2,1,1,0,1,0,5,0,,1,3,2,,0,,2,0,,0,* L7STS,404
"""


def test_parse_stat():
    servers = plan.parse_stat(STAT)
    assert servers[("tg_web", "t1_80")].sessions == 3 and servers[("tg_web", "t1_80")].state == "UP"
    s2 = servers[("tg_web", "t2_80")]
    assert (s2.state, s2.check_failures, s2.check_status) == ("DOWN", 1, "L7STS")


def test_a_new_target_is_added_disabled_then_checked_and_forced_down_in_one_line():
    cmds = plan.commands(desired(target(1)), {})
    assert cmds[0].startswith("add server tg_web/t1_80 10.0.0.2:49201 check inter 5000 fall 2 rise 2") and cmds[0].endswith(" disabled")
    assert cmds[1] == "enable health tg_web/t1_80"
    assert cmds[2] == "set server tg_web/t1_80 state ready; set server tg_web/t1_80 health down"


def test_drain_remove_and_steady_state():
    assert plan.commands(desired(target(1)), live("t1_80", "UP")) == []
    assert plan.commands(desired(target(1, "draining")), live("t1_80", "UP", 2)) == ["set server tg_web/t1_80 state drain"]
    assert plan.commands(desired(), live("t1_80", "DRAIN", 2)) == ["set server tg_web/t1_80 state maint"]
    assert plan.commands(desired(), live("t1_80", "MAINT", 1)) == []  # sessions still attached: retried later
    assert plan.commands(desired(), live("t1_80", "MAINT", 0)) == ["del server tg_web/t1_80"]


def test_reports_as_elb_words_them():
    d = desired(target(1), target(2), target(3), target(4, "draining"), target(5))
    servers = {**live("t1_80", "UP", 4), **live("t2_80", "DOWN 1/2", 0, 1, "L7STS"),
               **live("t3_80", "DOWN", 0, 2, "L7STS"), **live("t4_80", "DRAIN", 1)}
    r = {x.id: x for x in plan.reports(d, servers, seen_healthy=[])}
    assert (r["t1_80"].health, r["t1_80"].sessions) == ("healthy", 4)
    assert r["t2_80"].health == "initial"  # one failed check of a new target: still initial
    assert (r["t3_80"].health, r["t3_80"].reason) == ("unhealthy", "Target.ResponseCodeMismatch")
    assert (r["t4_80"].health, r["t4_80"].reason, r["t4_80"].sessions) == ("draining", "Target.DeregistrationInProgress", 1)
    assert (r["t5_80"].health, r["t5_80"].reason) == ("initial", "Elb.RegistrationInProgress")  # not added yet
    again = {x.id: x for x in plan.reports(d, servers, seen_healthy=[("web", "t2_80")])}
    assert again["t2_80"].health == "unhealthy"  # once healthy, a DOWN is unhealthy at once


ROUTED = [LbListener(loadBalancer="front", port=8080, protocol="HTTP", default=[("web", 1)],
                     routes=[LbRoute(priority=5, hosts=["api.*.example.com"], paths=["/v1/*"], forward=[("web", 3), ("web3", 1)])]),
          LbListener(loadBalancer="raw", port=9000, protocol="TCP", default=[("web2", 1)])]


def test_config_renders_rules_in_priority_order_with_weights_and_known_servers_only():
    d = LbDesired(listeners=ROUTED, targetGroups=[
        LbTargetGroup(name="web", protocol="HTTP", healthCheck=HC, targets=[target(1), target(2, "draining")]),
        LbTargetGroup(name="web2", protocol="TCP", healthCheck=TargetGroupHealthCheck())])
    text = config.render(d, config.Paths("/run/x/admin.sock", "/run/x/pid"), "0.0.0.0", {"web": [target(1), target(2, "draining")]})
    assert "stats socket /run/x/admin.sock mode 600 level admin expose-fd listeners" in text
    assert r"acl r5_host req.hdr(host),lower,field(1,:) -m reg ^api\..*\.example\.com$" in text
    assert "http-request set-var(txn.w) rand(4) if r5_host r5_path" in text
    assert "use_backend tg_web if r5_host r5_path { var(txn.w) -m int ge 0 } { var(txn.w) -m int lt 3 }" in text
    assert "server t1_80 10.0.0.2:49201 check inter 5000 fall 2 rise 2" in text
    assert "server t2_80 10.0.0.2:49202" in text and text.count("weight 0") == 1  # draining: no new requests
    assert "option httpchk GET /health" in text and "retry-on conn-failure" in text
    assert config.structure(d) == config.structure(d.model_copy(update={"targetGroups": [
        tg.model_copy(update={"targets": []}) for tg in d.targetGroups]}))  # targets never need a reload

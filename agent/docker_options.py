"""ECS container options -> Docker's ContainerCreate fields (pure): volumes and mounts, logging,
ulimits, Linux parameters, DNS and hosts. :func:`agent.docker_runtime.build_create_spec` merges
them into the create body; :func:`agent.runtime.task_volumes` names the Docker volumes a task needs first.

Volumes (docs/agent.md "Volumes"):

* ``host.sourcePath`` -> a bind mount of that node path (Docker creates it when missing, as ECS).
* no ``host`` / ``dockerVolumeConfiguration`` with scope ``task`` -> a Docker volume of the task,
  ``dockyard-<taskId[:12]>-<name>``, labelled with the task; removed when the agent removes the
  task's stopped containers.
* scope ``shared`` -> the Docker volume named ``<name>`` on that node: kept after its tasks and
  reused by the next; created only when ``autoprovision`` is true, otherwise it must exist.
"""
from __future__ import annotations

from typing import Any

from agent.runtime import container_name, docker_volume_name
from dockyard.ecs import ContainerDefinition
from dockyard.ecs_options import AWS_LOG_DRIVERS
from dockyard.wire import DesiredTask

MiB = 1024 * 1024
_DEVICE_PERMS = {"read": "r", "write": "w", "mknod": "m"}


def binds(task: DesiredTask, c: ContainerDefinition) -> list[str]:
    vols = {v.name: v for v in task.taskDefinition.volumes}
    out = []
    for m in c.mountPoints or ():
        v = vols[m.sourceVolume]  # validated at apply
        src = v.bind_path or docker_volume_name(task, v)
        out.append(f"{src}:{m.containerPath}" + (":ro" if m.readOnly else ""))
    return out


def host_config(task: DesiredTask, c: ContainerDefinition, memory_mib: int | None) -> dict[str, Any]:
    """HostConfig fields for the container's options (only those set)."""
    td = task.taskDefinition
    h: dict[str, Any] = {}
    if b := binds(task, c):
        h["Binds"] = b
    if c.volumesFrom:
        h["VolumesFrom"] = [container_name(task, v.sourceContainer) + (":ro" if v.readOnly else "") for v in c.volumesFrom]
    if c.links:
        h["Links"] = [f"{container_name(task, n)}:{alias or n}" for n, _, alias in (x.partition(":") for x in c.links)]
    lc = c.logConfiguration
    if lc is not None and lc.logDriver not in AWS_LOG_DRIVERS:  # awslogs/awsfirelens: the node's default
        h["LogConfig"] = {"Type": lc.logDriver, "Config": dict(lc.options)}
    if c.ulimits:
        h["Ulimits"] = [{"Name": u.name, "Soft": u.softLimit, "Hard": u.hardLimit} for u in c.ulimits]
    if c.readonlyRootFilesystem:
        h["ReadonlyRootfs"] = True
    lp = c.linuxParameters
    if lp is not None:
        if lp.initProcessEnabled:
            h["Init"] = True
        if lp.capabilities is not None:
            if lp.capabilities.add:
                h["CapAdd"] = list(lp.capabilities.add)
            if lp.capabilities.drop:
                h["CapDrop"] = list(lp.capabilities.drop)
        if lp.sharedMemorySize:
            h["ShmSize"] = lp.sharedMemorySize * MiB
        if lp.tmpfs:
            h["Tmpfs"] = {t.containerPath: ",".join([f"size={t.size}m", *t.mountOptions]) for t in lp.tmpfs}
        if lp.devices:
            h["Devices"] = [{"PathOnHost": d.hostPath, "PathInContainer": d.containerPath or d.hostPath,
                             "CgroupPermissions": "".join(_DEVICE_PERMS[p] for p in d.permissions) or "rwm"}
                            for d in lp.devices]
        if lp.maxSwap is not None and memory_mib:
            h["MemorySwap"] = (memory_mib + lp.maxSwap) * MiB  # Docker's limit is memory + swap
        if lp.swappiness is not None:
            h["MemorySwappiness"] = lp.swappiness
    if c.extraHosts:
        h["ExtraHosts"] = [f"{e.hostname}:{e.ipAddress}" for e in c.extraHosts]
    if c.dnsServers:
        h["Dns"] = list(c.dnsServers)
    if c.dnsSearchDomains:
        h["DnsSearch"] = list(c.dnsSearchDomains)
    if c.systemControls:
        h["Sysctls"] = {s.namespace: s.value for s in c.systemControls}
    if c.dockerSecurityOptions:
        h["SecurityOpt"] = list(c.dockerSecurityOptions)
    if td.pidMode == "host":
        h["PidMode"] = "host"
    if td.ipcMode in ("host", "none"):
        h["IpcMode"] = td.ipcMode
    return h


def config_options(c: ContainerDefinition) -> dict[str, Any]:
    """Top-level ContainerCreate fields for the container's options (only those set)."""
    out: dict[str, Any] = {}
    if c.hostname:
        out["Hostname"] = c.hostname
    if c.pseudoTerminal:
        out["Tty"] = True
    if c.interactive:
        out["OpenStdin"] = True
    if c.disableNetworking:
        out["NetworkDisabled"] = True
    return out

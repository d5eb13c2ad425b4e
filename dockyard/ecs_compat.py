"""What dockyard does with each part of an ECS task definition: the rules across fields, the
fields it refuses (running without them would change what a container does or what data it
keeps) and the fields it accepts without effect (named in a warning at apply).

Pure functions over a validated :class:`~dockyard.ecs.TaskDefinitionSpec`; every problem comes
back at once as ``(path, message, hint)`` with an ECS field path. docs/ecs-compat.md lists the
same catalogue for users.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from dockyard.ecs import TaskDefinitionSpec, ignored_fields
from dockyard.ecs_options import AWS_LOG_DRIVERS

Problem = tuple[str, str, str]  # (field path, message, hint)

# Accepted by ECS, refused here: the task would run differently from ECS without saying so.
REFUSED: dict[str, Problem] = {
    "volumes.efsVolumeConfiguration": (
        "", "Amazon EFS volumes are not available here",
        "mount your network storage with dockerVolumeConfiguration (e.g. driver: local, driverOpts: {type: nfs, "
        "o: addr=HOST, device: :/export}) or a host.sourcePath the node has mounted"),
    "volumes.fsxWindowsFileServerVolumeConfiguration": (
        "", "FSx for Windows File Server volumes are not available here", "use dockerVolumeConfiguration or host"),
    "volumes.s3filesVolumeConfiguration": ("", "S3 Files volumes are not available here", "use dockerVolumeConfiguration or host"),
    "volumes.configuredAtLaunch": (
        "", "volumes configured at launch (EBS) are not available here", "use dockerVolumeConfiguration or host"),
    "containerDefinitions.environmentFiles": (
        "", "environment files (in S3) cannot be read here: the container would start without those variables",
        "list the variables under environment, or store them as secrets (docs/secrets.md)"),
    "containerDefinitions.resourceRequirements": (
        "", "GPU and inference-accelerator requirements are not supported: the container would run without them",
        "remove resourceRequirements, and pass devices with linuxParameters.devices if the node has them"),
    "containerDefinitions.credentialSpecs": ("", "Windows credential specs are not supported", "remove credentialSpecs"),
    "containerDefinitions.portMappings.containerPortRange": (
        "", "port ranges are not supported", "list each port as its own portMappings entry"),
    "containerDefinitions.logConfiguration.secretOptions": (
        "", "log driver secretOptions are not supported: the driver would start without them",
        "put the value in logConfiguration.options"),
    "proxyConfiguration": ("", "App Mesh proxy configuration is not supported: traffic would bypass the proxy",
                           "remove proxyConfiguration"),
    "trustedExecutionConfiguration": ("", "trusted execution (confidential computing) is not available here: the task "
                                      "would run without it", "remove trustedExecutionConfiguration"),
    "inferenceAccelerators": ("", "Elastic Inference accelerators are not available here", "remove inferenceAccelerators"),
}

# Kept beside the definition, not part of it: the task definition's ECS resource tags (ListTagsForResource,
# propagateTags TASK_DEFINITION), so no warning.
KEPT = frozenset({"tags"})

# Accepted and without effect here: what dockyard does instead (shown in the apply warning).
NO_EFFECT: dict[str, str] = {
    "ephemeralStorage": "not enforced: the containers' layers use the node's disk",
    "runtimePlatform": "not checked: pin the architecture with a memberOf constraint on ecs.cpu-architecture",
    "enableFaultInjection": "no fault injection endpoints here",
    "taskRoleArn": "no IAM here: containers get no AWS credentials",
    "executionRoleArn": "no IAM here: images and secrets come from the node and dockyard's secret store",
    "containerDefinitions.startTimeout": "not enforced: dependsOn waits for its condition without a limit",
    "containerDefinitions.firelensConfiguration": "no FireLens here: the container runs as an ordinary container",
    "containerDefinitions.portMappings.appProtocol": "not used (no Service Connect)",
    "containerDefinitions.versionConsistency": "not used: the agent uses the image reference as given",
}

# Sysctls Docker lets a container set (namespaced): net.* (not with host networking) and IPC ones.
_IPC_SYSCTLS = re.compile(r"^(kernel\.(msgmax|msgmnb|msgmni|sem|shmall|shmmax|shmmni|shm_rmid_forced)|fs\.mqueue\..+)$")
_SECURITY_OPT = re.compile(r"^(no-new-privileges(:(true|false))?|apparmor[:=].+|label[:=].+|seccomp[:=].+)$")


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def refused_fields(td: TaskDefinitionSpec) -> list[Problem]:
    out = []
    for path in ignored_fields(td):
        rule = REFUSED.get(_generic(path))
        if rule is None:
            continue
        if path.endswith("configuredAtLaunch") and not _extra_value(td, path):
            continue
        out.append((path, rule[1], rule[2]))
    return out


def _extra_value(td: TaskDefinitionSpec, path: str) -> object:
    m = re.fullmatch(r"volumes\[(\d+)\]\.configuredAtLaunch", path)
    return (td.volumes[int(m.group(1))].model_extra or {}).get("configuredAtLaunch") if m else True


def taskdef_errors(td: TaskDefinitionSpec) -> list[Problem]:
    """Every rule across fields that ECS (or Docker, at container start) would break on."""
    errs: list[Problem] = list(refused_fields(td))
    err = errs.append
    mode = td.networkMode or ("awsvpc" if td.is_fargate else "bridge")
    vols: dict[str, int] = {}
    for i, v in enumerate(td.volumes):
        p = f"volumes[{i}]"
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,255}", v.name):
            err((f"{p}.name", f"volume name {v.name!r} must be 1-255 letters, digits, hyphens or underscores", ""))
        if v.name in vols:
            err((f"{p}.name", f"volume name {v.name!r} is used twice (also volumes[{vols[v.name]}])",
                 "give each volume its own name"))
        vols.setdefault(v.name, i)
        if v.host is not None and v.dockerVolumeConfiguration is not None:
            err((p, "a volume has either host or dockerVolumeConfiguration, not both", "remove one of them"))
        if v.bind_path is not None and not v.bind_path.startswith("/"):
            err((f"{p}.host.sourcePath", f"sourcePath must be an absolute path on the node, got {v.bind_path!r}", ""))
        dvc = v.dockerVolumeConfiguration
        if dvc is not None and dvc.autoprovision and dvc.scope != "shared":
            err((f"{p}.dockerVolumeConfiguration.autoprovision", "autoprovision applies to shared volumes only",
                 "set scope: shared, or remove autoprovision (a task-scoped volume is always created)"))
    names = {c.name for c in td.containerDefinitions}
    for i, c in enumerate(td.containerDefinitions):
        base = f"containerDefinitions[{i}]"
        paths: dict[str, str] = {}

        def claim(path: str, where: str, cname: str = c.name, paths: dict[str, str] = paths) -> None:
            if not path.startswith("/"):
                err((where, f"containerPath must be an absolute path, got {path!r}", ""))
            elif path.rstrip("/") in paths:
                err((where, f"two mounts on {path} in container '{cname}' (also {paths[path.rstrip('/')]})",
                     "mount each path once"))
            paths.setdefault(path.rstrip("/"), where)

        for j, m in enumerate(c.mountPoints or ()):
            where = f"{base}.mountPoints[{j}]"
            if m.sourceVolume not in vols:
                known = ", ".join(sorted(vols)) or "none are defined"
                err((f"{where}.sourceVolume", f"container '{c.name}' mounts unknown volume {m.sourceVolume!r} "
                     f"(task volumes: {known})", "add it under volumes, or fix the name"))
            claim(m.containerPath, f"{where}.containerPath")
        lp = c.linuxParameters
        for j, t in enumerate(lp.tmpfs if lp else ()):
            claim(t.containerPath, f"{base}.linuxParameters.tmpfs[{j}].containerPath")
        for j, d in enumerate(lp.devices if lp else ()):
            if not d.hostPath.startswith("/"):
                err((f"{base}.linuxParameters.devices[{j}].hostPath", "hostPath must be an absolute path", ""))
        for j, vf in enumerate(c.volumesFrom):
            if vf.sourceContainer not in names or vf.sourceContainer == c.name:
                err((f"{base}.volumesFrom[{j}].sourceContainer",
                     f"container '{c.name}' takes volumes from unknown container {vf.sourceContainer!r}",
                     f"use one of the other containers: {', '.join(sorted(names - {c.name})) or 'there are none'}"))
        for j, link in enumerate(c.links or ()):
            target = link.partition(":")[0]
            if mode != "bridge":
                err((f"{base}.links", f"links need networkMode bridge (this task uses {mode})",
                     "remove links; in awsvpc and host mode the containers reach each other on localhost"))
                break
            if target not in names or target == c.name:
                err((f"{base}.links[{j}]", f"container '{c.name}' links to unknown container {target!r}", ""))
        seen_ulimits: set[str] = set()
        for j, u in enumerate(c.ulimits):
            if u.name in seen_ulimits:
                err((f"{base}.ulimits[{j}].name", f"ulimit {u.name} is set twice", "set each ulimit once"))
            seen_ulimits.add(u.name)
            if u.hardLimit != -1 and (u.softLimit == -1 or u.softLimit > u.hardLimit):
                err((f"{base}.ulimits[{j}].softLimit", f"softLimit {u.softLimit} exceeds hardLimit {u.hardLimit}", ""))
        if lp is not None and (lp.maxSwap is not None or lp.swappiness is not None):
            hard = c.memory or (td.memory if td.is_fargate else None)
            if lp.maxSwap is not None and not hard:
                err((f"{base}.linuxParameters.maxSwap", "maxSwap needs a hard memory limit",
                     f"set containerDefinitions[{i}].memory"))
        if c.hostname and mode in ("awsvpc", "host"):
            err((f"{base}.hostname", f"hostname is not supported with networkMode {mode} (as in ECS)", "remove hostname"))
        for j, sc in enumerate(c.systemControls):
            where = f"{base}.systemControls[{j}].namespace"
            if sc.namespace.startswith("net."):
                if mode == "host":
                    err((where, f"{sc.namespace} cannot be set with networkMode host (it would change the node's own "
                         "network settings)", "use bridge or awsvpc, or set it on the node"))
            elif not _IPC_SYSCTLS.match(sc.namespace):
                err((where, f"{sc.namespace} is not a namespaced sysctl a container may set",
                     "use net.* or the IPC ones (kernel.shmmax, kernel.sem, fs.mqueue.*, ...)"))
        for j, opt in enumerate(c.dockerSecurityOptions):
            if not _SECURITY_OPT.match(opt):
                err((f"{base}.dockerSecurityOptions[{j}]", f"unsupported security option {opt!r}",
                     'use "no-new-privileges", "apparmor:PROFILE", "label:..." or "seccomp:..."'))
        if c.disableNetworking and c.portMappings:
            err((f"{base}.disableNetworking", "a container without networking cannot publish portMappings", ""))
    for fname in ("pidMode", "ipcMode"):
        if getattr(td, fname) == "task":
            err((fname, f"{fname} task (one namespace shared by the task's containers) is not supported yet",
                 f"use {fname}: host or leave it out"))
    return errs


def taskdef_warnings(td: TaskDefinitionSpec, cgroup_versions: Iterable[str] = ()) -> list[str]:
    """Accepted fields that do nothing here or do something different, each with what happens.
    ``cgroup_versions``: the cluster's nodes' cgroup versions (swappiness needs cgroup v1)."""
    out = []
    refused = {p for p, _, _ in refused_fields(td)}
    for path in ignored_fields(td):
        if path in refused or path in KEPT:
            continue
        what = NO_EFFECT.get(_generic(path)) or "not supported; ignored"
        out.append(f"{path}: {what}")
    for fname in ("taskRoleArn", "executionRoleArn"):
        if getattr(td, fname):
            out.append(f"{fname}: {NO_EFFECT[fname]}")
    for i, c in enumerate(td.containerDefinitions):
        lc = c.logConfiguration
        if lc is not None and lc.logDriver in AWS_LOG_DRIVERS:
            out.append(f"containerDefinitions[{i}].logConfiguration.logDriver: {lc.logDriver} needs AWS; "
                       "the node's default log driver is used instead (docker logs / dockyard logs work)")
        if c.linuxParameters and c.linuxParameters.swappiness is not None and "2" in set(cgroup_versions):
            out.append(f"containerDefinitions[{i}].linuxParameters.swappiness: ignored by Docker on this cluster's "
                       "cgroup v2 nodes")
    return out

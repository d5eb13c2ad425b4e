"""ECS task-definition models (RegisterTaskDefinition JSON, camelCase field names).

Shared by the orchestrator (validation, revisions, scheduling) and the agent (it receives
the container definitions in the desired document). Fields ECS has but dockyard does not
support yet are accepted and reported by :func:`ignored_fields`, never rejected.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from dockyard.ecs_base import NAME_RE, EcsModel
from dockyard.ecs_options import (
    HostEntry,
    LinuxParameters,
    LogConfiguration,
    SystemControl,
    Ulimit,
    Volume,
    VolumeFrom,
)

# ECS container health-check defaults and limits (seconds).
HEALTH_DEFAULTS = {"interval": 30, "timeout": 5, "retries": 3}
HEALTH_LIMITS = {"interval": (5, 300), "timeout": (2, 120), "retries": (1, 10), "startPeriod": (0, 300)}
DEFAULT_STOP_TIMEOUT = 30
# ECS container restart policy limits (seconds) and the most ignored exit codes.
RESTART_ATTEMPT_PERIOD = (60, 1800)
DEFAULT_RESTART_ATTEMPT_PERIOD = 300
MAX_IGNORED_EXIT_CODES = 50


class KeyValuePair(EcsModel):
    name: str
    value: str = ""

    @field_validator("value", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        # ECS environment values are strings; YAML users write numbers and booleans.
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return v


class PortMapping(EcsModel):
    containerPort: int = Field(ge=1, le=65535)
    hostPort: int | None = Field(default=None, ge=0, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    name: str | None = None


class HealthCheck(EcsModel):
    command: list[str] = Field(min_length=1)
    interval: int = HEALTH_DEFAULTS["interval"]
    timeout: int = HEALTH_DEFAULTS["timeout"]
    retries: int = HEALTH_DEFAULTS["retries"]
    startPeriod: int | None = None

    @field_validator("command")
    @classmethod
    def _cmd(cls, v: list[str]) -> list[str]:
        if v[0] not in ("CMD", "CMD-SHELL", "NONE"):
            raise ValueError('must start with "CMD" or "CMD-SHELL", e.g. ["CMD-SHELL", "wget -q -O- localhost || exit 1"]')
        if v[0] != "NONE" and len(v) < 2:
            raise ValueError(f'"{v[0]}" needs the command to run after it')
        return v

    @model_validator(mode="after")
    def _limits(self) -> HealthCheck:
        for fname, (lo, hi) in HEALTH_LIMITS.items():
            val = getattr(self, fname)
            if val is not None and not lo <= val <= hi:
                raise ValueError(f"{fname} must be between {lo} and {hi} seconds (ECS limit), got {val}")
        return self


class ContainerDependency(EcsModel):
    containerName: str
    condition: Literal["START", "COMPLETE", "SUCCESS", "HEALTHY"]


class RepositoryCredentials(EcsModel):
    """Registry credentials. `credentialsParameter` names a dockyard secret (or its ARN) whose value
    is JSON {"username", "password"}; without such a secret the agent resolves the name locally
    (env DOCKYARD_REGISTRY_AUTH_<NAME>); see docs/secrets.md."""

    credentialsParameter: str


ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")  # AWS Secrets Manager's characters


def secret_name(value_from: str) -> str:
    """The dockyard secret a ``valueFrom`` (or ``credentialsParameter``) names: the name itself,
    or the NAME of ``arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`` or
    ``arn:aws:ssm:REGION:ACCOUNT:parameter/NAME``. Raises ValueError for anything else
    (a JSON key, version stage or version id after the name is not supported: refused, not ignored)."""
    v = value_from.strip()
    if v.startswith("arn:"):
        parts = v.split(":")
        if len(parts) >= 7 and parts[2] == "secretsmanager" and parts[5] == "secret":
            if any(parts[7:]):
                raise ValueError("json-key, version-stage and version-id after the secret name are not supported; "
                                 "name the whole secret")
            v = parts[6]
        elif len(parts) == 6 and parts[2] == "ssm" and parts[5].startswith("parameter/"):
            v = parts[5].removeprefix("parameter/")
        else:
            raise ValueError("an ARN must be arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME or "
                             "arn:aws:ssm:REGION:ACCOUNT:parameter/NAME")
    if not SECRET_NAME_RE.match(v):
        raise ValueError("must name a dockyard secret: 1-512 letters, digits or /_+=.@- (or an ARN ending in one)")
    return v


class Secret(EcsModel):
    """A container secret: env var ``name`` gets the value of dockyard secret ``valueFrom``
    (resolved when the task starts; see docs/secrets.md)."""

    name: str
    valueFrom: str

    @field_validator("name")
    @classmethod
    def _env_name(cls, v: str) -> str:
        if not ENV_NAME_RE.match(v):
            raise ValueError("must be an environment variable name: letters, digits and _, not starting with a digit")
        return v

    @field_validator("valueFrom")
    @classmethod
    def _value_from(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a dockyard secret (or its ARN)")
        secret_name(v)
        return v

    @property
    def secret(self) -> str:
        return secret_name(self.valueFrom)


class MountPoint(EcsModel):
    sourceVolume: str
    containerPath: str
    readOnly: bool = False


class RestartPolicy(EcsModel):
    """ECS's container restart policy: an exited container is restarted in place on its node,
    unless its exit code is ignored or it ran less than ``restartAttemptPeriod`` seconds since
    its last (re)start (then the exit is handled as without a policy)."""

    enabled: bool
    ignoredExitCodes: list[int] = Field(default_factory=list)
    restartAttemptPeriod: int = DEFAULT_RESTART_ATTEMPT_PERIOD

    @field_validator("ignoredExitCodes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        if len(v) > MAX_IGNORED_EXIT_CODES:
            raise ValueError(f"at most {MAX_IGNORED_EXIT_CODES} exit codes (ECS limit), got {len(v)}")
        return v

    @field_validator("restartAttemptPeriod")
    @classmethod
    def _period(cls, v: int) -> int:
        lo, hi = RESTART_ATTEMPT_PERIOD
        if not lo <= v <= hi:
            raise ValueError(f"must be between {lo} and {hi} seconds (ECS limit)")
        return v


class ContainerDefinition(EcsModel):
    name: str
    image: str = Field(min_length=1)
    command: list[str] | None = None
    entryPoint: list[str] | None = None
    environment: list[KeyValuePair] = Field(default_factory=list)
    secrets: list[Secret] = Field(default_factory=list)
    portMappings: list[PortMapping] = Field(default_factory=list)
    essential: bool = True
    cpu: int = Field(default=0, ge=0)
    memory: int | None = Field(default=None, ge=6)
    memoryReservation: int | None = Field(default=None, ge=6)
    healthCheck: HealthCheck | None = None
    dependsOn: list[ContainerDependency] = Field(default_factory=list)
    stopTimeout: int | None = Field(default=None, ge=0, le=120)
    dockerLabels: dict[str, str] = Field(default_factory=dict)
    workingDirectory: str | None = None
    user: str | None = None
    privileged: bool | None = None
    links: list[str] | None = None
    mountPoints: list[MountPoint] | None = None
    repositoryCredentials: RepositoryCredentials | None = None
    volumesFrom: list[VolumeFrom] = Field(default_factory=list)
    logConfiguration: LogConfiguration | None = None
    ulimits: list[Ulimit] = Field(default_factory=list)
    readonlyRootFilesystem: bool | None = None
    linuxParameters: LinuxParameters | None = None
    extraHosts: list[HostEntry] = Field(default_factory=list)
    dnsServers: list[str] = Field(default_factory=list)
    dnsSearchDomains: list[str] = Field(default_factory=list)
    hostname: str | None = None
    systemControls: list[SystemControl] = Field(default_factory=list)
    pseudoTerminal: bool | None = None
    interactive: bool | None = None
    disableNetworking: bool | None = None
    dockerSecurityOptions: list[str] = Field(default_factory=list)
    restartPolicy: RestartPolicy | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-255 letters, digits, hyphens or underscores")
        return v

    @field_validator("command", "entryPoint", mode="before")
    @classmethod
    def _cmdlist(cls, v: Any) -> Any:
        if isinstance(v, str):
            raise ValueError('must be a list of strings, e.g. ["sh", "-c", "echo hi"]')
        return v

    @model_validator(mode="after")
    def _mem(self) -> ContainerDefinition:
        if self.memory is not None and self.memoryReservation is not None and self.memoryReservation > self.memory:
            raise ValueError("memoryReservation must not exceed memory")
        seen: set[str] = set()
        for j, sec in enumerate(self.secrets):
            if sec.name in seen:
                raise ValueError(f"@secrets[{j}].name: {sec.name} is given twice in secrets")
            seen.add(sec.name)
        return self

    @property
    def effective_stop_timeout(self) -> int:
        return DEFAULT_STOP_TIMEOUT if self.stopTimeout is None else self.stopTimeout

    @property
    def reserved_memory(self) -> int:
        """MiB the scheduler reserves: memoryReservation if set, else memory (as ECS)."""
        return self.memoryReservation or self.memory or 0


class PlacementConstraint(EcsModel):
    type: Literal["memberOf", "distinctInstance"]
    expression: str | None = None


def parse_cpu(v: Any) -> int | None:
    """ECS task cpu: "256", 256, "1 vCPU", "0.25 vcpu" -> cpu units (1024 per vCPU)."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError("must be cpu units like 256 or a string like \"1 vCPU\"")
    if isinstance(v, (int, float)):
        return int(v)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(vcpu)?\s*", str(v), re.IGNORECASE)
    if not m:
        raise ValueError(f'"{v}" is not a cpu value; use cpu units like "256" or "0.25 vCPU"')
    num = float(m.group(1))
    return int(round(num * 1024)) if m.group(2) else int(num)


def parse_memory(v: Any) -> int | None:
    """ECS task memory: "512", 512, "1GB", "0.5 gb" -> MiB."""
    if v is None or v == "":
        return None
    if isinstance(v, bool):
        raise ValueError('must be MiB like 512 or a string like "1GB"')
    if isinstance(v, (int, float)):
        return int(v)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gb|mb|mib|gib)?\s*", str(v), re.IGNORECASE)
    if not m:
        raise ValueError(f'"{v}" is not a memory value; use MiB like "512" or "1GB"')
    num = float(m.group(1))
    unit = (m.group(2) or "").lower()
    return int(round(num * 1024)) if unit in ("gb", "gib") else int(num)


class TaskDefinitionSpec(EcsModel):
    """The body of `aws ecs register-task-definition --cli-input-json`."""

    family: str
    containerDefinitions: list[ContainerDefinition] = Field(min_length=1, max_length=10)
    cpu: int | None = None
    memory: int | None = None
    networkMode: Literal["bridge", "host", "awsvpc", "none"] | None = None
    requiresCompatibilities: list[Literal["EC2", "FARGATE", "EXTERNAL"]] = Field(default_factory=list)
    placementConstraints: list[PlacementConstraint] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    taskRoleArn: str | None = None
    executionRoleArn: str | None = None
    pidMode: Literal["host", "task"] | None = None
    ipcMode: Literal["host", "task", "none"] | None = None

    @field_validator("family")
    @classmethod
    def _family(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must be 1-255 letters, digits, hyphens or underscores")
        return v

    @field_validator("cpu", mode="before")
    @classmethod
    def _cpu(cls, v: Any) -> Any:
        return parse_cpu(v)

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, v: Any) -> Any:
        return parse_memory(v)

    @model_validator(mode="after")
    def _rules(self) -> TaskDefinitionSpec:
        # "@path: message" lets manifest errors point at the field (see orchestrator/manifests.py).
        if self.cpu is not None and self.cpu < 0:
            raise ValueError("@cpu: must not be negative")
        if self.memory is not None and self.memory < 6:
            raise ValueError("@memory: must be at least 6 MiB")
        names = [c.name for c in self.containerDefinitions]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            i = max(i for i, n in enumerate(names) if n in dup)
            raise ValueError(f"@containerDefinitions[{i}].name: container names must be unique within a task "
                             f"definition; repeated: {', '.join(sorted(dup))}")
        if not any(c.essential for c in self.containerDefinitions):
            raise ValueError("at least one container must be essential (essential: true)")
        by_name = {c.name: c for c in self.containerDefinitions}
        for i, c in enumerate(self.containerDefinitions):
            if self.memory is None and c.memory is None and c.memoryReservation is None:
                raise ValueError(
                    f"@containerDefinitions[{i}].memory: container '{c.name}': at least one of 'memory' or "
                    "'memoryReservation' must be specified (or set task-level 'memory')"
                )
            for j, d in enumerate(c.dependsOn):
                target = by_name.get(d.containerName)
                where = f"@containerDefinitions[{i}].dependsOn[{j}]"
                if target is None or target.name == c.name:
                    raise ValueError(f"{where}.containerName: container '{c.name}' dependsOn unknown container "
                                     f"'{d.containerName}'")
                if d.condition == "HEALTHY" and target.healthCheck is None:
                    raise ValueError(
                        f"{where}.condition: container '{c.name}' dependsOn '{d.containerName}' HEALTHY, "
                        f"but '{d.containerName}' has no healthCheck"
                    )
        _check_dependency_cycle(self.containerDefinitions)
        return self

    # -- derived values -------------------------------------------------------------------
    @property
    def total_cpu(self) -> int:
        """cpu units reserved on a node: task-level cpu, else the sum of container cpu."""
        return self.cpu if self.cpu is not None else sum(c.cpu for c in self.containerDefinitions)

    @property
    def total_memory(self) -> int:
        """MiB reserved on a node: task-level memory, else the containers' reservations."""
        return self.memory if self.memory is not None else sum(c.reserved_memory for c in self.containerDefinitions)

    @property
    def is_fargate(self) -> bool:
        return "FARGATE" in self.requiresCompatibilities

    def canonical(self) -> dict[str, Any]:
        """The supported part of the spec, normalised; used for revision comparison."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)

    def spec_hash(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def container_hash(c: ContainerDefinition) -> str:
    """A label recording the container's spec (fields in model order: stable for a version)."""
    blob = c.model_dump_json(exclude_none=True, exclude_defaults=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def order_deps(c: ContainerDefinition, known: set[str] | dict[str, Any]) -> list[str]:
    """Containers that must come before ``c``: dependsOn, links (Docker links a running container)
    and volumesFrom (the source must exist). Unknown names are left to validation."""
    names = [d.containerName for d in c.dependsOn]
    names += [link.partition(":")[0] for link in c.links or ()]
    names += [v.sourceContainer for v in c.volumesFrom]
    return [n for n in dict.fromkeys(names) if n in known and n != c.name]


def _check_dependency_cycle(containers: list[ContainerDefinition]) -> None:
    known = {c.name for c in containers}
    deps = {c.name: order_deps(c, known) for c in containers}
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise ValueError(f"@containerDefinitions: dependsOn/links/volumesFrom have a cycle: {' -> '.join(trail + [n])}")
        state[n] = 1
        for m in deps.get(n, []):
            visit(m, trail + [n])
        state[n] = 2

    for name in deps:
        visit(name, [])


def start_order(containers: list[ContainerDefinition]) -> list[str]:
    """Container names in an order where each comes after the containers it depends on."""
    if not any(c.dependsOn or c.links or c.volumesFrom for c in containers):  # the common case, every agent pass
        return [c.name for c in containers]
    done: list[str] = []
    by_name = {c.name: c for c in containers}

    def visit(n: str) -> None:
        if n in done:
            return
        for d in order_deps(by_name[n], by_name):
            visit(d)
        done.append(n)

    for c in containers:
        visit(c.name)
    return done


def ignored_fields(model: BaseModel, path: str = "") -> list[str]:
    """Paths of fields that were accepted but are not supported (kept in model_extra)."""
    out: list[str] = []
    for key in (model.model_extra or {}):
        out.append(f"{path}{key}")
    for fname in type(model).model_fields:
        val = getattr(model, fname)
        if isinstance(val, BaseModel):
            out += ignored_fields(val, f"{path}{fname}.")
        elif isinstance(val, list):
            for i, item in enumerate(val):
                if isinstance(item, BaseModel):
                    out += ignored_fields(item, f"{path}{fname}[{i}].")
    return out


# ---- RunTask overrides -----------------------------------------------------------------------
class ContainerOverride(EcsModel):
    """RunTask's overrides.containerOverrides[]: what a one-off run changes in one container."""

    name: str
    command: list[str] | None = None
    environment: list[KeyValuePair] = Field(default_factory=list)
    cpu: int | None = Field(default=None, ge=0)
    memory: int | None = Field(default=None, ge=6)
    memoryReservation: int | None = Field(default=None, ge=6)


class TaskOverride(EcsModel):
    containerOverrides: list[ContainerOverride] = Field(default_factory=list)


def apply_overrides(spec: TaskDefinitionSpec, overrides: TaskOverride) -> TaskDefinitionSpec:
    """The definition a task with ``overrides`` runs (pure): command replaced, environment merged
    (an override wins over the definition's variable of the same name), cpu/memory replaced.
    Raises ValueError with an ``@overrides...`` path for a container the definition lacks."""
    names = {c.name: i for i, c in enumerate(spec.containerDefinitions)}
    containers = list(spec.containerDefinitions)
    for j, o in enumerate(overrides.containerOverrides):
        if o.name not in names:
            raise ValueError(f"@overrides.containerOverrides[{j}].name: task definition {spec.family} has no container "
                             f"{o.name!r} (containers: {', '.join(names)})")
        c = containers[names[o.name]]
        update: dict[str, Any] = {}
        if o.command is not None:
            update["command"] = list(o.command)
        if o.environment:
            env = {kv.name: kv for kv in c.environment}
            env.update({kv.name: kv for kv in o.environment})
            update["environment"] = list(env.values())
        for f in ("cpu", "memory", "memoryReservation"):
            if getattr(o, f) is not None:
                update[f] = getattr(o, f)
        containers[names[o.name]] = c.model_copy(update=update)
    return spec.model_copy(update={"containerDefinitions": containers})

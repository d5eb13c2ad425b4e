"""ECS container and task options beyond the basics: volumes, logging, limits, Linux parameters.

Field names and shapes are RegisterTaskDefinition's. Each model checks only its own values; the
rules that relate fields to each other (a mount's sourceVolume exists, two mounts on one path)
are in :mod:`dockyard.ecs_compat`, which reports every problem at once with its field path.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dockyard.ecs_base import EcsModel

# ---- volumes ------------------------------------------------------------------------------------


class HostVolumeProperties(EcsModel):
    """A bind mount of a host path; without sourcePath, a task-scoped scratch volume (ECS)."""

    sourcePath: str | None = None


class DockerVolumeConfiguration(EcsModel):
    """A Docker volume. scope task: created for the task, removed with it; shared: named after the
    volume, kept on the node after its tasks and reused by the next task there."""

    scope: Literal["task", "shared"] = "task"
    autoprovision: bool = False
    driver: str | None = None
    driverOpts: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)


class Volume(EcsModel):
    name: str
    host: HostVolumeProperties | None = None
    dockerVolumeConfiguration: DockerVolumeConfiguration | None = None

    @property
    def bind_path(self) -> str | None:
        return self.host.sourcePath if self.host is not None else None

    @property
    def shared(self) -> bool:
        return self.dockerVolumeConfiguration is not None and self.dockerVolumeConfiguration.scope == "shared"


class VolumeFrom(EcsModel):
    sourceContainer: str
    readOnly: bool = False


# ---- logging ------------------------------------------------------------------------------------
# Passed to Docker as they are. awslogs / awsfirelens / splunk / logentries are ECS's too: the
# first two need AWS and are mapped to the node's default driver (with a warning at apply).
DOCKER_LOG_DRIVERS = ("json-file", "local", "syslog", "journald", "fluentd", "gelf", "none", "splunk")
AWS_LOG_DRIVERS = ("awslogs", "awsfirelens")


class LogConfiguration(EcsModel):
    logDriver: str
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("logDriver")
    @classmethod
    def _driver(cls, v: str) -> str:
        if v not in DOCKER_LOG_DRIVERS + AWS_LOG_DRIVERS:
            raise ValueError(f"unknown log driver {v!r}; use one of {', '.join(DOCKER_LOG_DRIVERS + AWS_LOG_DRIVERS)}")
        return v

    @field_validator("options", mode="before")
    @classmethod
    def _stringify(cls, v: object) -> object:
        # Docker takes strings only; YAML users write `max-file: 3` and `mode: non-blocking`.
        if isinstance(v, dict):
            return {k: (("true" if x else "false") if isinstance(x, bool) else str(x)) for k, x in v.items()}
        return v


# ---- limits and Linux parameters ----------------------------------------------------------------
UlimitName = Literal["core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                     "rss", "rtprio", "rttime", "sigpending", "stack"]


class Ulimit(EcsModel):
    name: UlimitName
    softLimit: int = Field(ge=-1)
    hardLimit: int = Field(ge=-1)


# The capabilities ECS accepts in linuxParameters.capabilities (Docker's names without CAP_).
CAPABILITIES = frozenset(
    "ALL AUDIT_CONTROL AUDIT_WRITE BLOCK_SUSPEND CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID IPC_LOCK "
    "IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST "
    "NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE "
    "SYS_RAWIO SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM".split()
)


class KernelCapabilities(EcsModel):
    add: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)

    @field_validator("add", "drop")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        bad = [c for c in v if c.upper().removeprefix("CAP_") not in CAPABILITIES]
        if bad:
            raise ValueError(f"unknown capabilit{'y' if len(bad) == 1 else 'ies'} {', '.join(bad)}; "
                             "use Linux names without CAP_, e.g. NET_ADMIN, SYS_PTRACE or ALL")
        return [c.upper().removeprefix("CAP_") for c in v]


class Device(EcsModel):
    hostPath: str
    containerPath: str | None = None
    permissions: list[Literal["read", "write", "mknod"]] = Field(default_factory=list)


class Tmpfs(EcsModel):
    containerPath: str
    size: int = Field(gt=0)  # MiB
    mountOptions: list[str] = Field(default_factory=list)


class LinuxParameters(EcsModel):
    capabilities: KernelCapabilities | None = None
    devices: list[Device] = Field(default_factory=list)
    initProcessEnabled: bool | None = None
    sharedMemorySize: int | None = Field(default=None, gt=0)  # MiB
    tmpfs: list[Tmpfs] = Field(default_factory=list)
    maxSwap: int | None = Field(default=None, ge=0)  # MiB
    swappiness: int | None = Field(default=None, ge=0, le=100)


class HostEntry(EcsModel):
    hostname: str
    ipAddress: str


class SystemControl(EcsModel):
    namespace: str
    value: str

"""Plain records of what happened to scopes and tasks; no OpenTelemetry, no patching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scopewatch._core.frames import Frames


@dataclass(slots=True)
class CancelInfo:
    """Who asked for a cancellation, and where."""

    origin: str
    """``deadline``, ``explicit``, ``parent`` or ``external``."""
    task: str
    """Name of the requesting task (``""`` when requested outside any task)."""
    location: str
    """``file:line`` of the request in user code (``""`` when unknown)."""
    reason: str = ""
    span_context: Any = None
    """The requesting task's recording span context, for a span link (opaque here)."""
    failure: bool = False
    """The cancellation is part of a failure: a child's or sibling's error made a group cancel
    (an anomaly in the ``anomalies`` span mode; a normal shutdown is not)."""
    inherited: str = ""
    """For a ``parent`` origin: the origin of the enclosing scope's request it came from
    (``deadline``, ``external``, ...), ``""`` when not derived from one."""


@dataclass(slots=True)
class Violation:
    """One misuse, with everything needed to explain it."""

    kind: str
    cause: str
    scope_kind: str
    enter_task: str
    exit_task: str
    asyncgen: str
    enter_frames: Frames
    exit_frames: Frames
    detail: str = ""
    """An extra sentence for the explanation (e.g. where a cancellation was delivered)."""
    asyncgen_managed: bool = False
    """The async generator is run by ``contextlib`` (an ``@asynccontextmanager``), not iterated."""


@dataclass(slots=True, eq=False)
class ScopeRecord:
    """A scope between enter and exit (strongly holds the scope object meanwhile)."""

    obj: object
    kind: str
    user: bool
    """Entered by user code (a span candidate) rather than inside anyio/asyncio."""
    task: Any
    """The asyncio task that entered it."""
    task_name: str
    start_ns: int
    """Wall clock at enter, ``time.time_ns()``."""
    start: float
    """Monotonic clock at enter, ``time.perf_counter()``."""
    frames: Frames
    asyncgen: str = ""
    asyncgen_frame: int = 0
    """``id()`` of the async generator frame the scope was entered in, ``0`` if none."""
    timeout: float | None = None
    shield: bool = False
    cancel: CancelInfo | None = None
    violations: list[Violation] = field(default_factory=list)
    parent_context: Any = None
    """OpenTelemetry context current at enter (opaque here)."""
    span: Any = None
    """The live span in ``all`` mode (opaque here)."""
    context_token: Any = None
    attached_context: Any = None

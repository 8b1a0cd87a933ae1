"""Plain records of what happened to scopes and tasks; no OpenTelemetry, no patching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scopewatch._core.frames import Frames
    from scopewatch._core.task_codes import CodeInfo
    from scopewatch._core.tasks import TaskTracker


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


class ScopeRecord:
    """A scope between enter and exit (strongly holds the scope object meanwhile).

    Built on every scope enter, so it is as cheap as Python allows: the facts every scope has
    are slots set by ``__init__``; the rest (a cancel request, violations, a span, the
    parent context) default to class attributes and land in the instance ``__dict__`` only
    for the scopes that have them. Compared by identity.
    """

    __slots__ = ("__dict__", "frames", "kind", "obj", "start", "task", "task_name", "user")

    obj: object
    kind: str
    user: bool
    """Entered by user code (a span candidate) rather than inside anyio/asyncio."""
    task: Any
    """The asyncio task that entered it."""
    task_name: str
    start: float
    """Monotonic clock at enter, ``time.perf_counter()``."""
    frames: Frames
    start_ns: int = 0
    """Wall clock at enter (``time.time_ns()``); ``0`` until the telemetry derives it."""
    asyncgen: str = ""
    asyncgen_frame: int = 0
    """``id()`` of the async generator frame the scope was entered in, ``0`` if none."""
    timeout: float | None = None
    shield: bool = False
    cancel: CancelInfo | None = None
    violations: tuple[Violation, ...] = ()
    """Violations of this scope, in order (replaced, never appended to: the default is shared)."""
    parent_context: Any = None
    """OpenTelemetry context current at enter (opaque here)."""
    span: Any = None
    """The live span in ``all`` mode (opaque here)."""
    context_token: Any = None
    attached_context: Any = None

    def __init__(
        self,
        obj: object,
        kind: str,
        user: bool,
        task: Any,
        task_name: str,
        start_ns: int,
        start: float,
        frames: Frames,
        asyncgen: str = "",
        asyncgen_frame: int = 0,
        timeout: float | None = None,
        shield: bool = False,
    ) -> None:
        self.obj = obj
        self.kind = kind
        self.user = user
        self.task = task
        self.task_name = task_name
        self.start = start
        self.frames = frames
        if start_ns:
            self.start_ns = start_ns
        if asyncgen_frame:
            self.asyncgen = asyncgen
            self.asyncgen_frame = asyncgen_frame
        if timeout is not None:
            self.timeout = timeout
        if shield:
            self.shield = shield

    def add_violation(self, violation: Violation) -> None:
        """Append ``violation``."""
        self.violations = (*self.violations, violation)

    def __repr__(self) -> str:
        return f"<ScopeRecord {self.kind} of {self.task_name!r} at {id(self.obj):#x}>"


class TaskRecord:
    """One tracked task from creation to its end.

    A plain class: only the five facts of creation are set per task (the hot path); the
    rest are class-level defaults, set on the rare tasks that get cancelled or a span.
    """

    span: Any = None
    span_context: Any = None
    """The task span's context once a span exists (for links from tasks it cancels)."""
    cancel: CancelInfo | None = None
    """The first cancellation request not yet undone (``uncancel()``)."""
    canceller_frames: Frames = ()
    delivered_frames: Frames = ()
    """Where the task was suspended when ``cancel()`` was called."""
    converted: bool = False
    """An ``asyncio.timeout`` expired while that request was pending (it may convert it)."""
    ended: bool = False
    attached: Any = None
    """``all`` mode, task created with an explicit ``context=``: what to undo there at its end."""
    group_requests: int = 0
    """Requests by an ``asyncio.TaskGroup`` on its parent not (yet) undone by that group: some
    Pythons (3.11, early 3.12) never undo them, so they are not the task's to re-raise."""
    system: bool = False
    """A trio system task (the init task, ``spawn_system_task``): internal whatever it runs."""
    routine: bool = False
    """Its end is the normal life of a system task (finished, or cancelled as its run shut
    down): not anomalous however long it lived."""

    def __init__(
        self,
        info: CodeInfo,
        tracker: TaskTracker,
        start: float,
        parent: str,
        parent_context: Any,
    ) -> None:
        self.info = info
        self.tracker = tracker
        self.start = start
        """``time.perf_counter()`` at creation."""
        self.parent = parent
        """Name of the task that created it (``""`` outside any task)."""
        self.parent_context = parent_context
        """OpenTelemetry context current at creation (opaque here)."""

    def done(self, task: Any) -> None:
        """Done callback of the task."""
        if not self.ended:
            try:
                self.tracker.task_done(self, task)
            except Exception as error:
                self.tracker.on_error(error)

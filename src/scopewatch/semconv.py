"""Every span name, attribute key, event name, metric name and unit scopewatch emits.

These names are a public contract (see DESIGN.md sections 2-4): Jaeger searches, Grafana
alerts, PromQL and alert rules are built on them. No other module spells them out.
"""

from __future__ import annotations

from typing import Final

# --- span names -------------------------------------------------------------------------------
SPAN_ANYIO_CANCEL_SCOPE: Final = "anyio.CancelScope"
SPAN_ANYIO_MOVE_ON_AFTER: Final = "anyio.move_on_after"
SPAN_ANYIO_MOVE_ON_AT: Final = "anyio.move_on_at"
SPAN_ANYIO_FAIL_AFTER: Final = "anyio.fail_after"
SPAN_ANYIO_FAIL_AT: Final = "anyio.fail_at"
SPAN_ANYIO_TASK_GROUP: Final = "anyio.TaskGroup"
SPAN_ASYNCIO_TIMEOUT: Final = "asyncio.timeout"
SPAN_ASYNCIO_TIMEOUT_AT: Final = "asyncio.timeout_at"
SPAN_ASYNCIO_TASK_GROUP: Final = "asyncio.TaskGroup"
SPAN_TRIO_CANCEL_SCOPE: Final = "trio.CancelScope"
SPAN_TRIO_MOVE_ON_AFTER: Final = "trio.move_on_after"
SPAN_TRIO_MOVE_ON_AT: Final = "trio.move_on_at"
SPAN_TRIO_FAIL_AFTER: Final = "trio.fail_after"
SPAN_TRIO_FAIL_AT: Final = "trio.fail_at"
SPAN_TRIO_NURSERY: Final = "trio.Nursery"
SPAN_TASK_PREFIX: Final = "task "
SPAN_SESSION_PREFIX: Final = "session "

# --- scope attributes -------------------------------------------------------------------------
SCOPE_KIND: Final = "scopewatch.scope.kind"
SCOPE_ID: Final = "scopewatch.scope.id"
SCOPE_TIMEOUT: Final = "scopewatch.scope.timeout"
SCOPE_SHIELD: Final = "scopewatch.scope.shield"
SCOPE_CANCEL_CALLED: Final = "scopewatch.scope.cancel_called"
SCOPE_CANCELLED_CAUGHT: Final = "scopewatch.scope.cancelled_caught"
SCOPE_OUTCOME: Final = "scopewatch.scope.outcome"
SCOPE_INTERNAL: Final = "scopewatch.scope.internal"
ENTER_TASK: Final = "scopewatch.enter.task"
EXIT_TASK: Final = "scopewatch.exit.task"
ENTER_APP: Final = "scopewatch.enter.app"
"""``path:line in function`` of the first application frame (outside installed distributions, the
standard library and scopewatch) on the entering stack, set when ``code.*`` is a library frame."""
EXIT_APP: Final = "scopewatch.exit.app"
"""The same for the exiting stack."""
CROSS_TASK: Final = "scopewatch.cross_task"
ASYNCGEN: Final = "scopewatch.asyncgen"
CODE_FUNCTION: Final = "code.function.name"
CODE_FILE: Final = "code.file.path"
CODE_LINE: Final = "code.line.number"
CODE_STACKTRACE: Final = "code.stacktrace"
EXIT_STACKTRACE: Final = "scopewatch.exit.stacktrace"

OUTCOME_OK: Final = "ok"
OUTCOME_CANCELLED: Final = "cancelled"
OUTCOME_DEADLINE_EXCEEDED: Final = "deadline_exceeded"
OUTCOME_ERROR: Final = "error"

# --- cancellation -----------------------------------------------------------------------------
CANCEL_ORIGIN: Final = "scopewatch.cancel.origin"
CANCEL_TASK: Final = "scopewatch.cancel.task"
CANCEL_LOCATION: Final = "scopewatch.cancel.location"
CANCEL_REASON: Final = "scopewatch.cancel.reason"

ORIGIN_DEADLINE: Final = "deadline"
ORIGIN_EXPLICIT: Final = "explicit"
ORIGIN_PARENT: Final = "parent"
ORIGIN_EXTERNAL: Final = "external"

# --- violations -------------------------------------------------------------------------------
VIOLATION_KIND: Final = "scopewatch.violation.kind"
VIOLATION_CAUSE: Final = "scopewatch.violation.cause"

KIND_CROSS_TASK_EXIT: Final = "cross_task_exit"
KIND_NON_LIFO_EXIT: Final = "non_lifo_exit"
KIND_SCOPE_LEAKED: Final = "scope_leaked"
KIND_CANCEL_SWALLOWED: Final = "cancel_swallowed"

CAUSE_ASYNCGEN_FINALIZER: Final = "asyncgen_finalizer"
CAUSE_ASYNCGEN_SHUTDOWN: Final = "asyncgen_shutdown"
CAUSE_PER_STEP_TASK: Final = "per_step_task"
CAUSE_INTERLEAVED_GENERATORS: Final = "interleaved_generators"
CAUSE_EXIT_ORDER: Final = "exit_order"
CAUSE_OTHER_TASK: Final = "other_task"
CAUSE_UNKNOWN: Final = "unknown"
CAUSE_ASYNCGEN_SUSPENDED: Final = "asyncgen_suspended"
"""``non_lifo_exit``: an async generator suspended inside a scope of this task (left un-closed,
e.g. after ``break``) still holds that scope when the code around the loop exits its own."""
CAUSE_TASK_RETURNED: Final = "task_returned"
"""``non_lifo_exit`` / ``cross_task_exit``: the entering task returned while scopes it entered
(e.g. held by an exit stack or a connection object) were still open; another task closed them."""
CAUSE_TASK_FINISHED: Final = "task_finished"
"""``scope_leaked``: the entering task finished with the scope still entered."""
CAUSE_LOOP_CLOSED: Final = "loop_closed"
"""``scope_leaked``: the event loop closed with the scope still entered (abandoned generator)."""
CAUSE_CANCEL_CAUGHT: Final = "cancel_caught"
"""``cancel_swallowed``: the task caught the ``CancelledError`` and finished normally."""
CAUSE_TIMEOUT_CONVERTED: Final = "timeout_converted"
"""``cancel_swallowed``: a pending cancellation was turned into ``TimeoutError`` by an expiring
``asyncio.timeout`` (asyncio cannot tell the two requests apart) and handled as a timeout."""

# --- events -----------------------------------------------------------------------------------
EVENT_CANCEL: Final = "scopewatch.cancel"
EVENT_VIOLATION: Final = "scopewatch.violation"
EVENT_LOCK_HELD_AT_END: Final = "scopewatch.lock.held_at_end"
EVENT_VIOLATION_REFERENCE: Final = "scopewatch.violation.reference"
"""On an open session span: a violation recorded on another span of the session (not counted)."""
VIOLATION_TRACE_ID: Final = "scopewatch.violation.trace_id"
"""On ``EVENT_VIOLATION_REFERENCE``: hex trace id of the span that carries the violation."""
VIOLATION_SPAN_ID: Final = "scopewatch.violation.span_id"
"""On ``EVENT_VIOLATION_REFERENCE``: hex span id of the span that carries the violation."""

# --- task attributes --------------------------------------------------------------------------
TASK_NAME: Final = "scopewatch.task.name"
TASK_PARENT: Final = "scopewatch.task.parent"
TASK_OUTCOME: Final = "scopewatch.task.outcome"

# --- lock / session / alert attributes --------------------------------------------------------
LOCK_KIND: Final = "scopewatch.lock.kind"
LOCK_NAME: Final = "scopewatch.lock.name"
LOCK_OUTCOME: Final = "scopewatch.lock.outcome"
LOCK_OUTCOME_ACQUIRED: Final = "acquired"
LOCK_OUTCOME_CANCELLED: Final = "cancelled"
LOCK_OUTCOME_TIMED_OUT: Final = "timed_out"
LOCK_NAME_OVERFLOW: Final = "other"
LOCK_NAME_UNKNOWN: Final = "unknown"
"""``scopewatch.lock.name`` of a lock created before instrumentation started (no creation site)."""
LOCK_HELD_FOR: Final = "scopewatch.lock.held_for"
"""Seconds a lock had been held when its holder task ended (on ``EVENT_LOCK_HELD_AT_END``)."""
LOCK_KIND_ASYNCIO_LOCK: Final = "asyncio.Lock"
LOCK_KIND_ASYNCIO_SEMAPHORE: Final = "asyncio.Semaphore"
LOCK_KIND_ASYNCIO_BOUNDED_SEMAPHORE: Final = "asyncio.BoundedSemaphore"
LOCK_KIND_ASYNCIO_CONDITION: Final = "asyncio.Condition"
LOCK_KIND_ANYIO_LOCK: Final = "anyio.Lock"
LOCK_KIND_ANYIO_SEMAPHORE: Final = "anyio.Semaphore"
LOCK_KIND_ANYIO_CONDITION: Final = "anyio.Condition"
LOCK_KIND_ANYIO_CAPACITY_LIMITER: Final = "anyio.CapacityLimiter"
LOCK_KIND_TRIO_LOCK: Final = "trio.Lock"
LOCK_KIND_TRIO_STRICT_FIFO_LOCK: Final = "trio.StrictFIFOLock"
LOCK_KIND_TRIO_SEMAPHORE: Final = "trio.Semaphore"
LOCK_KIND_TRIO_CAPACITY_LIMITER: Final = "trio.CapacityLimiter"
LOCK_KIND_TRIO_CONDITION: Final = "trio.Condition"

SESSION_KIND: Final = "scopewatch.session.kind"
SESSION_NAME: Final = "scopewatch.session.name"
SESSION_OUTCOME: Final = "scopewatch.session.outcome"
SESSION_ID: Final = "scopewatch.session.id"
SESSION_KIND_MCP_CLIENT_SESSION: Final = "mcp.ClientSession"
SESSION_KIND_MCP_CLIENT: Final = "mcp.Client"
SESSION_KIND_CLAUDE_SDK_CLIENT: Final = "claude_agent_sdk.ClaudeSDKClient"

ALERT_RULE: Final = "scopewatch.alert.rule"
ALERT_ACTION: Final = "scopewatch.alert.action"
ALERT_ACTION_LOG: Final = "log"
ALERT_ACTION_DEBUGPY: Final = "debugpy"
EXCEPTION_MESSAGE: Final = "exception.message"
"""OpenTelemetry's key; the ``scopewatch.violation`` event carries the explanation in it."""

# --- metrics ----------------------------------------------------------------------------------
METRIC_VIOLATIONS: Final = "scopewatch.violations"
METRIC_SCOPES: Final = "scopewatch.scopes"
"""Every user scope that ended, by kind and outcome (observable: exact in-process counts)."""
METRIC_SCOPE_DURATION: Final = "scopewatch.scope.duration"
METRIC_TASKS: Final = "scopewatch.tasks"
"""Every task that ended, by outcome (observable: exact in-process counts)."""
METRIC_TASK_DURATION: Final = "scopewatch.task.duration"
METRIC_TASK_ACTIVE: Final = "scopewatch.task.active"
METRIC_LOCK_WAIT_DURATION: Final = "scopewatch.lock.wait.duration"
METRIC_LOCK_HOLD_DURATION: Final = "scopewatch.lock.hold.duration"
METRIC_LOCK_CONTENTIONS: Final = "scopewatch.lock.contentions"
METRIC_SESSION_ACTIVE: Final = "scopewatch.session.active"
METRIC_SESSION_DURATION: Final = "scopewatch.session.duration"
METRIC_ALERTS: Final = "scopewatch.alerts"
METRIC_UNTRACKED: Final = "scopewatch.untracked"
"""Scopes and tasks not tracked because ``MAX_TRACKED`` of them were already tracked."""
UNTRACKED_KIND: Final = "scopewatch.untracked.kind"
UNTRACKED_SCOPE: Final = "scope"
UNTRACKED_TASK: Final = "task"

UNIT_VIOLATION: Final = "{violation}"
UNIT_SECONDS: Final = "s"
UNIT_SCOPE: Final = "{scope}"
UNIT_TASK: Final = "{task}"
UNIT_ACQUISITION: Final = "{acquisition}"
UNIT_SESSION: Final = "{session}"
UNIT_ALERT: Final = "{alert}"
UNIT_UNTRACKED: Final = "{item}"

# Bucket advice for histograms in seconds (the SDK default buckets are meant for milliseconds).
SECONDS_BUCKETS: Final = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip

INSTRUMENTATION_SCOPE: Final = "scopewatch"

"""Alert rule evaluation cost per finished span, relative to one bare SDK span.

Target (issue 5): with ten rules loaded, evaluating a span costs at most 20 % of one SDK span's
own cost (``start_span(...).end()`` on an SDK ``TracerProvider`` with no processor: the
smallest, hence strictest, denominator). The rule processor's ``on_end`` is called directly on
already-finished spans as scopewatch emits them, so the figure is the evaluation alone. Spans:

* ``scope ok`` -- an ``anyio.move_on_after`` span with the 13 attributes scopewatch sets, no
  violation, status unset (the common case in ``all`` mode);
* ``task`` -- a ``task worker`` span;
* ``violation`` -- a ``cross_task_exit`` span that matches two rules, both in cooldown (so
  the match, threshold and cooldown bookkeeping are counted, but no action runs).

Ratios are medians of per-round ratios with the variants interleaved; nothing is asserted.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import Status, StatusCode

from benchmarks import common
from scopewatch import semconv
from scopewatch.alerts.inline import parse_rules
from scopewatch.alerts.processor import AlertProcessor
from scopewatch.alerts.sources import DEFAULT_RULE

if TYPE_CHECKING:
    from collections.abc import Callable

TEN_RULES = "; ".join(
    [
        "cross-task: scopewatch.violation.kind == cross_task_exit -> log",
        "slow-anyio: span == anyio.* and duration > 5 over 3/60 -> log",
        "slow-timeouts: span == asyncio.timeout* and duration > 5 -> log",
        "deadlines: span == anyio.* and scopewatch.scope.outcome == deadline_exceeded "
        "and scopewatch.scope.timeout > 2 -> log",
        "errors: scopewatch.scope.kind in (anyio.CancelScope, anyio.TaskGroup) "
        "and status == error -> log",
        "fetch: code.file.path glob '*/fetch/*.py' and scopewatch.scope.outcome == cancelled "
        "-> log",
        "task-errors: span == 'task *' and scopewatch.task.outcome == error -> log",
        "long-sessions: span == 'session *' and duration > 60 -> log",
        "swallowed: scopewatch.violation.kind == cancel_swallowed -> log",
    ]
)
"""Nine typical user rules; with the built-in default rule that makes ten."""

SCOPE_ATTRIBUTES: dict[str, Any] = {
    semconv.SCOPE_KIND: semconv.SPAN_ANYIO_MOVE_ON_AFTER,
    semconv.SCOPE_ID: "7f3a2c1d9e80",
    semconv.SCOPE_SHIELD: False,
    semconv.ENTER_TASK: "Task-12",
    semconv.SCOPE_TIMEOUT: 1.0,
    semconv.CODE_FUNCTION: "fetch_page",
    semconv.CODE_FILE: "/srv/app/crawler/pages.py",
    semconv.CODE_LINE: 88,
    semconv.EXIT_TASK: "Task-12",
    semconv.CROSS_TASK: False,
    semconv.SCOPE_CANCEL_CALLED: False,
    semconv.SCOPE_CANCELLED_CAUGHT: False,
    semconv.SCOPE_OUTCOME: semconv.OUTCOME_OK,
}


class _Runtime:
    """The two things the processor reads from a runtime."""

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics import MeterProvider

        from scopewatch.config import Settings
        from scopewatch.telemetry.metrics import Instruments

        self.settings = Settings()
        self.instruments = Instruments(MeterProvider().get_meter("bench"))


def _finished_spans() -> dict[str, ReadableSpan]:
    tracer = TracerProvider().get_tracer("bench")
    scope = tracer.start_span(semconv.SPAN_ANYIO_MOVE_ON_AFTER, attributes=SCOPE_ATTRIBUTES)
    scope.end()
    task = tracer.start_span(
        semconv.SPAN_TASK_PREFIX + "worker",
        attributes={semconv.TASK_NAME: "Task-3", semconv.TASK_OUTCOME: semconv.OUTCOME_OK},
    )
    task.end()
    violation = tracer.start_span(
        semconv.SPAN_ANYIO_CANCEL_SCOPE,
        attributes={
            **SCOPE_ATTRIBUTES,
            semconv.SCOPE_KIND: semconv.SPAN_ANYIO_CANCEL_SCOPE,
            semconv.EXIT_TASK: "Task-13",
            semconv.CROSS_TASK: True,
            semconv.VIOLATION_KIND: semconv.KIND_CROSS_TASK_EXIT,
            semconv.VIOLATION_CAUSE: semconv.CAUSE_OTHER_TASK,
        },
    )
    violation.set_status(Status(StatusCode.ERROR))
    violation.end()
    return {"scope ok": scope, "task": task, "violation": violation}  # type: ignore[dict-item]


def _timed_loop(body: Callable[[], None], n: int) -> float:
    start = common.clock()
    for _ in range(n):
        body()
    return common.clock() - start


def run(quick: bool) -> dict[str, Any]:
    """Measure per-span rule evaluation against one bare SDK span; return the ratios."""
    n = 2_000 if quick else 50_000
    rounds = 3 if quick else 9
    logging.getLogger("scopewatch").setLevel(logging.ERROR)  # the first violation logs once
    rules = [DEFAULT_RULE, *parse_rules(TEN_RULES)]
    one = [DEFAULT_RULE]
    processors = {
        "10 rules": AlertProcessor(_Runtime(), rules),  # type: ignore[arg-type]
        "1 rule": AlertProcessor(_Runtime(), one),  # type: ignore[arg-type]
    }
    spans = _finished_spans()
    for processor in processors.values():  # warm caches; put the violation rules in cooldown
        for span in spans.values():
            processor.on_end(span)
    tracer = TracerProvider().get_tracer("bench")

    def bare_span() -> None:
        tracer.start_span(semconv.SPAN_ANYIO_MOVE_ON_AFTER).end()

    cases: dict[str, Callable[[], None]] = {"bare SDK span": bare_span}
    for label, processor in processors.items():
        for kind, span in spans.items():
            cases[f"{label}, {kind}"] = lambda p=processor, s=span: p.on_end(s)
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(_timed_loop(cases[name], n))
    bare_ns = common.per_op_ns(common.median(samples["bare SDK span"]), n)
    figures = [
        common.figure(
            "10 rules / bare SDK span (scope ok)",
            common.ratio(samples, "10 rules, scope ok", "bare SDK span"),
            "<= 0.2",
            note="per-span rule evaluation with ten rules, over one SDK span start+end",
        ),
        common.figure(
            "10 rules / bare SDK span (task)",
            common.ratio(samples, "10 rules, task", "bare SDK span"),
            "<= 0.2",
        ),
        common.figure(
            "10 rules / bare SDK span (violation in cooldown)",
            common.ratio(samples, "10 rules, violation", "bare SDK span"),
            "<= 0.2",
        ),
        common.figure(
            "1 rule / bare SDK span (scope ok)",
            common.ratio(samples, "1 rule, scope ok", "bare SDK span"),
        ),
        common.figure("bare SDK span", bare_ns, unit="ns"),
        common.figure(
            "10 rules, scope ok",
            common.per_op_ns(common.median(samples["10 rules, scope ok"]), n),
            unit="ns",
        ),
    ]
    raw = {
        "n": n,
        "rounds": rounds,
        "median_ns": {name: common.per_op_ns(common.median(v), n) for name, v in samples.items()},
    }
    note = (
        "rules: AlertProcessor.on_end on finished spans (ten rules = the default rule + nine "
        "typical ones) vs start_span().end() on an SDK TracerProvider without processors"
    )
    result = common.result("rules", figures, raw=raw, notes=[note])
    for entry in figures:
        value = common.format_value(entry["value"], entry["unit"])
        print(f"rules: {entry['name']}: {value}", file=sys.stderr)
    return result


if __name__ == "__main__":
    run(quick=False)

"""Starting and ending spans on the user's tracer provider, which runs its span processors.

The OpenTelemetry SDK calls every span processor in turn, in the thread that starts or ends
the span, and lets an exception of one propagate to that caller. A user's processor that raises
is not scopewatch's to switch off: the exception is logged once and scopewatch goes on (the
scope or task keeps being tracked; its violations are still counted). A span whose start
failed is replaced by the non-recording ``INVALID_SPAN``.

Once the tracer provider is shut down, every span started on it makes its processors log a
warning; scopewatch's rule processor hears of the shutdown and the telemetry classes switch to
a no-op tracer (violations are still detected and counted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry.trace import INVALID_SPAN, NoOpTracer

from scopewatch import _safety

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.trace import Span, Tracer

    from scopewatch._runtime import Runtime


def on_provider_shutdown(runtime: Runtime, use_tracer: Callable[[Tracer], None]) -> None:
    """Call ``use_tracer`` with a no-op tracer when the runtime's tracer provider shuts down."""
    runtime.on_provider_shutdown.append(use_tracer)


def provider_shut_down(runtime: Runtime) -> None:
    """The runtime's tracer provider shut down: stop starting spans on it."""
    tracer = NoOpTracer()
    for use_tracer in runtime.on_provider_shutdown:
        use_tracer(tracer)


def start_failed(error: Exception) -> Span:
    """``tracer.start_span`` raised ``error``: log it once; the span to use instead."""
    _safety.outside_failed(
        "telemetry.span_processor.on_start",
        "a span processor's on_start (run when scopewatch started a span)",
        error,
    )
    return INVALID_SPAN


def end(span: Span) -> None:
    """End ``span``; an exception of a span processor's ``on_end`` is logged once."""
    try:
        span.end()
    except Exception as error:
        _safety.outside_failed(
            "telemetry.span_processor.on_end",
            "a span processor's on_end (run when scopewatch ended a span)",
            error,
        )

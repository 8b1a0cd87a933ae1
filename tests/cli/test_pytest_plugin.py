"""The pytest plugin, run in pytester subprocesses so its activation never touches this session."""

from __future__ import annotations

import sys
import textwrap

import pytest

from scopewatch import _runtime

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""

GENERATOR = """
import asyncio
import contextlib
import gc

import anyio
import pytest


async def ticks():
    async with anyio.create_task_group():
        yield 1
        yield 2


async def break_in_a_task():
    async def consumer():
        async for _ in ticks():
            break

    with contextlib.suppress(BaseException):  # anyio's RuntimeError lands in the loop
        await asyncio.create_task(consumer())
        await asyncio.sleep(0.05)
"""


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makeini(INI)
    pytester.makepyfile(test_app=GENERATOR + textwrap.dedent(source))
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)


def test_violation_fails_the_test_with_the_explanation(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_breaks():
            asyncio.run(break_in_a_task())

        def test_clean():
            async def main():
                with anyio.move_on_after(0.01):
                    await anyio.sleep(1)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.sleep, 0)
            asyncio.run(main())
        """,
        "--scopewatch",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*scopewatch: cancel-scope violations fail*",
            "*_ test_breaks _*",
            "scopewatch: 1 cancel-scope violation(s) during test_app.py::test_breaks",
            "scopewatch: cross_task_exit (asyncgen_finalizer): this anyio.TaskGroup scope*",
            "  entered in task 'Task-2' at */test_app.py:10",
            "  exited in task 'Task-3' at */test_app.py:10",
            "  inside async generator ticks",
            "  cause: the async generator was abandoned un-closed*",
            "  fix: *",
            "  entered at (most recent call last):",
            '    File "*test_app.py", line *, in *consumer',
            "  exited at (most recent call last):",
            "*@pytest.mark.scopewatch_allow('cross_task_exit')*",
            "FAILED test_app.py::test_breaks - scopewatch: 1 cancel-scope violation*",
        ]
    )
    # pytest and pluggy frames are left out of the stacks shown.
    assert "site-packages/pluggy" not in result.stdout.str()
    assert "site-packages/_pytest" not in result.stdout.str()


def test_warn_mode_passes_with_a_warning(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_breaks():
            asyncio.run(break_in_a_task())
        """,
        "--scopewatch=warn",
    )
    # only ours is counted: anyio before 4.14 adds a pytest deprecation warning under pytest 9.2
    result.assert_outcomes(passed=1, warnings=result.parseoutcomes()["warnings"])
    assert result.stdout.str().count("ScopewatchViolationWarning:") == 1
    result.stdout.fnmatch_lines(
        [
            "*scopewatch: cancel-scope violations warn*",
            "*ScopewatchViolationWarning: scopewatch: 1 cancel-scope violation(s) during*",
            "*cross_task_exit (asyncgen_finalizer)*",
        ]
    )


def test_warn_mode_turned_into_an_error_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        def test_breaks():
            asyncio.run(break_in_a_task())
        """,
        "--scopewatch=warn",
        "-W",
        "error::scopewatch.pytest_plugin.ScopewatchViolationWarning",
    )
    result.assert_outcomes(failed=1)


def test_swallowed_runtime_error_still_fails(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        class Client:
            async def connect(self):
                self._stack = contextlib.AsyncExitStack()
                await self._stack.enter_async_context(anyio.create_task_group())

            async def close(self):
                try:
                    await self._stack.aclose()
                except RuntimeError:
                    pass  # the application hides anyio's complaint

        def test_close_from_shutdown_task():
            async def main():
                client = Client()
                await client.connect()
                await asyncio.create_task(client.close(), name="shutdown")
            asyncio.run(main())
        """,
        "--scopewatch",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "scopewatch: cross_task_exit (other_task): this anyio.TaskGroup scope*",
            "  entered in task 'Task-1' at */test_app.py:*",
            "  exited in task 'shutdown' at */test_app.py:*",
        ]
    )


def test_allow_marker(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.scopewatch_allow("cross_task_exit")
        def test_kind_allowed():
            asyncio.run(break_in_a_task())

        @pytest.mark.scopewatch_allow("asyncgen_finalizer", "other_task")
        def test_cause_allowed():
            asyncio.run(break_in_a_task())

        @pytest.mark.scopewatch_allow
        def test_all_allowed():
            asyncio.run(break_in_a_task())

        @pytest.mark.scopewatch_allow("scope_leaked")
        def test_other_kind_allowed():
            asyncio.run(break_in_a_task())

        @pytest.mark.scopewatch_allow("cross_task")
        def test_typo():
            pass
        """,
        "--scopewatch",
        "--strict-markers",
    )
    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "scopewatch_allow: 'cross_task' is not a scopewatch violation kind or cause; "
            "accepted: cross_task_exit, non_lifo_exit, scope_leaked, cancel_swallowed, "
            "asyncgen_finalizer, *",
            "FAILED test_app.py::test_other_kind_allowed - scopewatch: 1 cancel-scope*",
            "ERROR test_app.py::test_typo - Failed: scopewatch_allow: 'cross_task' is not *",
        ]
    )


def test_the_remedy_makes_the_failing_test_pass(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        from scopewatch.remedies import safe_aiter

        async def deadlined():
            with anyio.fail_after(60):
                yield 1
                yield 2

        async def first_tick(fixed):
            if fixed:
                async with safe_aiter(deadlined()) as it:
                    async for tick in it:
                        return tick
            async for tick in deadlined():
                return tick

        @pytest.mark.parametrize("fixed", [False, True])
        def test_first_tick(fixed):
            async def main():
                tick = await asyncio.create_task(first_tick(fixed))
                await asyncio.sleep(0.01)
                return tick
            assert asyncio.run(main()) == 1
        """,
        "--scopewatch",
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_app.py::test_first_tick[[]False[]] - scopewatch*"])


def test_marker_is_registered_while_inactive(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.scopewatch_allow("cross_task_exit")
        def test_marked():
            pass
        """,
        "--strict-markers",
    )
    result.assert_outcomes(passed=1)


def test_gc_time_violation_is_attributed_to_the_test_that_abandoned_the_generator(
    pytester: pytest.Pytester,
) -> None:
    result = run(
        pytester,
        """
        gc.disable()  # only the plugin collects: the cycle below is freed at its gc.collect()

        @pytest.mark.asyncio
        async def test_abandons():
            generator = ticks()
            await generator.__anext__()
            cycle = [generator]
            cycle.append(cycle)
            del generator, cycle

        @pytest.mark.asyncio
        async def test_after():
            await asyncio.sleep(0)
        """,
        "--scopewatch",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*_ ERROR at teardown of test_abandons _*",
            "scopewatch: 1 cancel-scope violation(s) during test_app.py::test_abandons "
            "(surfaced during teardown)",
            "scopewatch: cross_task_exit (asyncgen_*",
            "  inside async generator ticks",
            "ERROR test_app.py::test_abandons - scopewatch*",
        ]
    )
    assert "test_after - scopewatch" not in result.stdout.str()


def test_pytest_asyncio_tests(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.mark.asyncio
        async def test_breaks():
            async for _ in ticks():
                break

        @pytest.mark.asyncio
        async def test_exit_stack_closed_by_another_task():
            stack = contextlib.AsyncExitStack()
            await stack.enter_async_context(asyncio.timeout(10))
            await asyncio.create_task(stack.aclose())  # asyncio raises nothing here

        @pytest.mark.asyncio
        async def test_clean():
            async with asyncio.timeout(1):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(asyncio.sleep(0))
        """
        if sys.version_info >= (3, 11)
        else """
        @pytest.mark.asyncio
        async def test_breaks():
            async for _ in ticks():
                break

        @pytest.mark.asyncio
        async def test_exit_stack_closed_by_another_task():
            stack = contextlib.AsyncExitStack()
            stack.enter_context(anyio.CancelScope())
            with contextlib.suppress(RuntimeError):
                await asyncio.create_task(stack.aclose())

        @pytest.mark.asyncio
        async def test_clean():
            with anyio.fail_after(1):
                await asyncio.sleep(0)
        """,
        "--scopewatch",
    )
    # The abandoned generator is closed when pytest-asyncio shuts its loop down: teardown.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines_random(
        [
            "ERROR test_app.py::test_breaks - scopewatch: 1 cancel-scope violation*",
            "FAILED test_app.py::test_exit_stack_closed_by_another_task - scopewatch: 1*",
        ]
    )
    result.stdout.fnmatch_lines(["scopewatch: cross_task_exit (other_task): this *"])


def test_anyio_plugin_on_both_backends(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param

        @pytest.mark.anyio
        async def test_breaks(anyio_backend):
            async for _ in ticks():
                break

        @pytest.mark.anyio
        async def test_clean(anyio_backend):
            with anyio.move_on_after(0.01):
                await anyio.sleep(1)
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep, 0)
        """,
        "--scopewatch",
    )
    # The abandoned generator's scope is a violation on both backends; clean code passes on both.
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_app.py::test_breaks[[]asyncio[]] - scopewatch: 1 cancel-scope*",
            "FAILED test_app.py::test_breaks[[]trio[]] - scopewatch: 1 cancel-scope*",
        ],
        consecutive=False,
    )


def test_inactive_by_default_changes_nothing(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        import sys

        from opentelemetry import trace

        from scopewatch import _runtime

        def test_nothing_instrumented():
            import anyio._backends._asyncio as backend

            assert _runtime.current is None
            assert "scopewatch._pytest_watch" not in sys.modules
            assert "scopewatch.instrumentation.anyio_scopes" not in sys.modules
            assert backend.CancelScope.__exit__.__module__ == "anyio._backends._asyncio"
            assert type(trace.get_tracer_provider()).__name__ == "ProxyTracerProvider"

        def test_violation_not_judged():
            asyncio.run(break_in_a_task())
        """,
    )
    result.assert_outcomes(passed=2)
    assert "scopewatch" not in result.stdout.lines[1] + result.stdout.lines[2]
    result.stdout.no_fnmatch_line("*cancel-scope violations*")


def test_active_session_keeps_the_global_providers(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider

        USER_PROVIDER = TracerProvider()
        trace.set_tracer_provider(USER_PROVIDER)
        """
    )
    result = run(
        pytester,
        """
        from opentelemetry import trace

        from scopewatch import _runtime

        def test_providers(request):
            import conftest

            assert trace.get_tracer_provider() is conftest.USER_PROVIDER
            assert _runtime.current is not None
            assert _runtime.current.tracer_provider is not conftest.USER_PROVIDER
        """,
        "--scopewatch",
    )
    result.assert_outcomes(passed=1)


def test_ini_option(pytester: pytest.Pytester) -> None:
    source = """
        def test_breaks():
            asyncio.run(break_in_a_task())
    """
    pytester.makepyfile(test_app=GENERATOR + textwrap.dedent(source))
    for value, outcome in (("true", "failed"), ("warn", "passed"), ("false", "passed")):
        pytester.makeini(INI + f"scopewatch = {value}\n")
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
        result.assert_outcomes(**{outcome: 1})
    pytester.makeini(INI + "scopewatch = ture\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: ini option scopewatch: 'ture' is not accepted; use true, fail, warn or false"]
    )
    # The command line wins over the ini file.
    pytester.makeini(INI + "scopewatch = true\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--scopewatch=off")
    result.assert_outcomes(passed=1)


def test_bad_command_line_value(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app="def test_ok():\n    pass\n")
    result = pytester.runpytest_subprocess("--scopewatch=strict")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*argument --scopewatch: 'strict' is not accepted; use --scopewatch=fail, "
            "--scopewatch=warn or --scopewatch=off (a value that is not one of these must be "
            "an existing test path)"
        ]
    )


def test_a_path_right_after_the_bare_flag_is_a_path(pytester: pytest.Pytester) -> None:
    source = """
        def test_breaks():
            asyncio.run(break_in_a_task())
    """
    pytester.makeini(INI)
    pytester.makepyfile(**{"inner/test_app": GENERATOR + textwrap.dedent(source)})
    pytester.makepyfile(**{"other/test_other": "def test_other():\n    pass\n"})
    for args in (
        ("--scopewatch", "inner/"),
        ("--scopewatch", "inner"),
        ("--scopewatch", "inner/test_app.py"),
        ("--scopewatch", "inner/test_app.py::test_breaks"),
        ("other", "--scopewatch", "inner"),
    ):
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=120)
        # The path is collected (and only the paths given), the mode is the bare flag's: fail.
        outcomes = {"failed": 1, "passed": 1} if args[0] == "other" else {"failed": 1}
        result.assert_outcomes(**outcomes)
        result.stdout.fnmatch_lines(["*scopewatch: cross_task_exit (asyncgen_finalizer)*"])
    # A mode word is still a mode, also before a path.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--scopewatch", "warn", "inner", timeout=120
    )
    result.assert_outcomes(passed=1)  # warned, not failed (older anyios add warnings of theirs)
    result.stdout.fnmatch_lines(["*scopewatch: cross_task_exit (asyncgen_finalizer)*"])


def test_violation_outside_tests_fails_the_session(pytester: pytest.Pytester) -> None:
    result = run(
        pytester,
        """
        asyncio.run(break_in_a_task())  # at import: during collection

        def test_ok():
            pass
        """,
        "--scopewatch",
    )
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*= scopewatch: violations outside tests =*",
            "scopewatch: cross_task_exit (asyncgen_finalizer): *",
        ]
    )


def test_this_session_is_not_instrumented() -> None:
    assert _runtime.current is None

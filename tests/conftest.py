"""Shared pytest hooks.

`summary_lines`: a test appends a line to it (e.g. the fuzz and fault-injection suites' counts),
and the line is printed in pytest's terminal summary, so the figures show in CI logs without -s.
"""
import pytest

_SUMMARY = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def summary_lines(request):
    return request.config.stash.setdefault(_SUMMARY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("FABRIC summaries")
        for line in lines:
            terminalreporter.write_line(line)

"""modules/errors.py: `report(message, exc_info=False)`.

Fact encoded (webui-host-api.md §1.4 "Exceptions are caught and reported per script", §3.3): the
webui catches exceptions of script hooks and callbacks, prints them and goes on generating.
Stand-in addition: every report is also kept in `reported` (message, exception), so a test can
assert that nothing was silently swallowed.
"""
import sys
import traceback

reported: list[tuple[str, BaseException | None]] = []


def report(message: str, *, exc_info: bool = False) -> None:
    error = sys.exc_info()[1] if exc_info else None
    reported.append((message, error))
    print(f"*** {message}", file=sys.stderr)
    if exc_info:
        traceback.print_exc()

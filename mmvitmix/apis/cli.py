"""How every command-line tool of the project reports a failure.

A tool's ``if __name__ == '__main__':`` block calls :func:`run` with its
``main``. Any exception that ``main`` raises reaches the user as one line on
standard error, ``error: <what went wrong> [--debug ...]``, and the process exits with
status 1 (argparse's own usage errors keep their status 2). The Python
traceback is shown only on request: ``--debug`` anywhere on the command line
(removed before ``main`` sees the arguments) or the environment variable
``MMVITMIX_DEBUG=1``.

Input checks raise :class:`ToolError` (a ``ValueError``) with a message that
names the problem and the accepted values; exceptions of other types are
reported with their type name in front, since they are not expected.
"""
import os
import sys
from typing import Callable, List, Optional

from mmvitmix.utils.errors import ToolError

__all__ = ['DEBUG_ENV', 'DEBUG_FLAG', 'ToolError', 'debug_requested',
           'one_line', 'run']

#: environment variable that turns the traceback back on
DEBUG_ENV = 'MMVITMIX_DEBUG'
DEBUG_FLAG = '--debug'


def debug_requested(argv: Optional[List[str]] = None) -> bool:
    """True when ``--debug`` is in ``argv`` or ``MMVITMIX_DEBUG`` is set."""
    argv = sys.argv[1:] if argv is None else argv
    flag = os.environ.get(DEBUG_ENV, '').strip().lower()
    return DEBUG_FLAG in argv or flag not in ('', '0', 'false', 'no')


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (nothing dropped)."""
    text = str(exc)
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        text = str(exc.args[0])  # KeyError's str() adds quotes
    text = ' '.join(part.strip() for part in text.splitlines() if part.strip())
    if not isinstance(exc, ToolError):
        name = type(exc).__name__
        text = f'{name}: {text}' if text else name
    return text


def run(main: Callable, argv: Optional[List[str]] = None):
    """Run ``main(argv)``; exit with one line instead of a traceback.

    Args:
        main: the tool's entry point, called with the argument list (without
            ``--debug``).
        argv: the arguments; default ``sys.argv[1:]``.

    Returns:
        What ``main`` returns; an ``int`` is passed to ``sys.exit``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        result = main(argv)
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:  # every failure is reported, as one line
        if debug:
            raise
        sys.stdout.flush()
        print(f'error: {one_line(exc)} [{DEBUG_FLAG} or {DEBUG_ENV}=1 '
              'shows the traceback]', file=sys.stderr)
        sys.exit(1)
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)
    return result

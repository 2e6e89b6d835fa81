"""Run command-line tools as a user would, several cases in one process.

Usage::

    python tests/test_tools/tool_driver.py CASES.json RESULTS.json

``CASES.json`` is a list of ``{"name": ..., "tool": PATH, "argv": [...]}``.
Each case runs the tool's own ``if __name__ == '__main__':`` block
(``runpy.run_path(tool, run_name='__main__')``) with ``sys.argv`` set, its
standard output and error captured, and records the exit status: one Python
start-up (the imports take seconds) serves every case of a tool.
``RESULTS.json`` maps each name to ``{"code", "stdout", "stderr"}``;
``code`` is the ``SystemExit`` status (0 when the tool returned), or the
text ``"uncaught <exception>"`` when an exception escaped the tool.
"""
import contextlib
import io
import json
import runpy
import sys


def run_case(tool: str, argv: list) -> dict:
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = [tool, *argv]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(tool, run_name='__main__')
            except SystemExit as exc:
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:  # sys.exit('message'): printed, status 1
                    print(exc.code, file=sys.stderr)
                    code = 1
    except BaseException as exc:  # noqa: BLE001  reported to the test
        code = f'uncaught {type(exc).__name__}: {exc}'
    finally:
        sys.argv = saved
    return dict(code=code, stdout=out.getvalue(), stderr=err.getvalue())


def main():
    cases_file, results_file = sys.argv[1:3]
    with open(cases_file) as f:
        cases = json.load(f)
    results = {}
    for case in cases:
        results[case['name']] = run_case(case['tool'], case['argv'])
        with open(results_file, 'w') as f:  # partial results survive a hang
            json.dump(results, f)


if __name__ == '__main__':
    main()

"""Run one tool on many command lines in ONE process, as a user would.

Each case sets ``sys.argv`` and runs the script with
``runpy.run_path(script, run_name='__main__')`` (its real ``__main__``
block), catching ``SystemExit`` and capturing what it prints. Starting a
Python process with torch and the OpenMMLab stacks costs seconds, so the
tests of a tool's argument checks share one::

    from tests.test_tools._driver import run_tool_cases
    results = run_tool_cases('tools/x.py', [['--a', '1'], ['--b']], cwd=tmp)
    code, stdout, stderr = results[0]

Run as a script, it reads ``{"script": ..., "cases": [[...], ...]}`` from
the JSON file given as its argument and prints the results as JSON after
:data:`MARKER`.
"""
import contextlib
import io
import json
import os
import runpy
import subprocess
import sys
import traceback
from pathlib import Path
from typing import List, Sequence, Tuple

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = '@@tool-cases@@'


def _run_case(script: str, argv: List[str]) -> Tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved = (list(sys.argv), list(sys.path), dict(os.environ), os.getcwd())
    sys.argv = [script] + list(argv)
    sys.path.insert(0, os.path.dirname(script))  # as `python script` does
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name='__main__')
            except SystemExit as exc:
                if exc.code is None:
                    code = 0
                elif isinstance(exc.code, int):
                    code = exc.code
                else:  # sys.exit('message') prints it and exits 1
                    print(exc.code, file=sys.stderr)
                    code = 1
            except BaseException:  # what the interpreter would print
                traceback.print_exc()
                code = 1
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.environ.clear()
        os.environ.update(saved[2])
        os.chdir(saved[3])
    return code, out.getvalue(), err.getvalue()


def run_tool_cases(script, cases: Sequence[Sequence[str]], cwd=None,
                   env=None, timeout: float = 600
                   ) -> List[Tuple[int, str, str]]:
    """(exit code, stdout, stderr) of ``script`` (a path, relative to the
    repository root or absolute) for each argument list of ``cases``, all
    run in one fresh Python process in ``cwd``, with this repository first
    on ``PYTHONPATH`` and ``MMVITMIX_DEBUG`` unset unless ``env`` sets it."""
    script = str((REPO_ROOT / script).resolve())
    base = dict(os.environ)
    base.pop('MMVITMIX_DEBUG', None)
    base['PYTHONPATH'] = os.pathsep.join(
        [str(REPO_ROOT)] + [p for p in [base.get('PYTHONPATH')] if p])
    base.update(env or {})
    request = json.dumps(dict(script=script, cases=[list(c) for c in cases]))
    proc = subprocess.run(
        [sys.executable, __file__, '-'], input=request, cwd=cwd or REPO_ROOT,
        env=base, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or MARKER not in proc.stdout:
        raise RuntimeError(f'the driver failed (exit {proc.returncode}): '
                           f'{proc.stderr[-3000:]}')
    return [tuple(r) for r in json.loads(proc.stdout.split(MARKER)[-1])]


def main() -> None:
    request = json.loads(sys.stdin.read() if sys.argv[1] == '-' else
                         Path(sys.argv[1]).read_text())
    results = [_run_case(request['script'], argv)
               for argv in request['cases']]
    sys.stdout.write(MARKER + json.dumps(results) + '\n')


if __name__ == '__main__':
    main()

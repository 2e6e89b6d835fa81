"""How every command-line tool of the project reports a failure.

A tool's ``if __name__ == '__main__':`` block calls :func:`run` with its
``main``. Any exception that ``main`` raises reaches the user as one line on
standard error, ``error: <what went wrong> [--debug ...]``, and the process
exits with
status 1 (argparse's own usage errors keep their status 2). The Python
traceback is shown only on request: ``--debug`` anywhere on the command line
(removed before ``main`` sees the arguments) or the environment variable
``MMVITMIX_DEBUG=1``.

Input checks raise :class:`ToolError` (a ``ValueError``) with a message that
names the problem and the accepted values; exceptions of other types are
reported with their type name in front, since they are not expected.

The checks the tools share (counts, image sides, input files and folders,
configs, output paths, the device) are here too: each returns the checked
value or raises :class:`ToolError`, and none writes anything, so that a
tool can check all its arguments before any heavy work. :func:`write_file`
writes an output whole or not at all.
"""
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence

#: environment variable that turns the traceback back on
DEBUG_ENV = 'MMVITMIX_DEBUG'
DEBUG_FLAG = '--debug'


class ToolError(ValueError):
    """A problem with what the user gave a tool; its message is the report."""


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


# --------------------------------------------------------------------------
# argument checks shared by the tools (each raises ToolError, touches nothing)
# --------------------------------------------------------------------------

#: the smallest input side the backbones take: their total stride
MIN_SIDE = 32


def count(option: str, value, minimum: int = 1, maximum: int = None,
          what: str = '') -> int:
    """``value`` if it is an int in ``[minimum, maximum]``; ``what`` says why
    the bounds are what they are."""
    ok = isinstance(value, int) and not isinstance(value, bool) and \
        value >= minimum and (maximum is None or value <= maximum)
    if not ok:
        bounds = (f'>= {minimum}' if maximum is None else
                  f'from {minimum} to {maximum}')
        why = f' ({what})' if what else ''
        raise ToolError(f'{option} {value!r} is out of range: give an '
                        f'integer {bounds}{why}')
    return value


def threads(option: str, value) -> int:
    """A thread count: 1 to the machine's logical CPUs."""
    return count(option, value, 1, os.cpu_count() or 1,
                 "this machine's logical CPUs")


def positive_shape(option: str, values, minimum: int = MIN_SIDE,
                   lengths=(1, 2)) -> tuple:
    """Image sides (``H`` or ``H W``; one side when ``values`` is an int),
    each at least ``minimum``: the backbones' total stride."""
    scalar = isinstance(values, int)
    sides = (values, ) if scalar else tuple(values)
    form = 'an integer' if scalar else ' or '.join(
        {1: 'H', 2: 'H W'}.get(n, f'{n} sides') for n in lengths) + \
        ' as integers'
    why = (f' (the backbones\' total stride is {MIN_SIDE})'
           if minimum == MIN_SIDE else '')
    accepted = f'give {form} of at least {minimum}{why}'
    if not scalar and len(sides) not in lengths:
        raise ToolError(f'{option} got {len(sides)} values {list(sides)}; '
                        f'{accepted}')
    bad = [s for s in sides if not isinstance(s, int) or s < minimum]
    if bad:
        raise ToolError(f'{option} {" ".join(map(str, sides))}: side '
                        f'{bad[0]} is too small; {accepted}')
    return sides


def existing_file(option: str, path, suffixes=None) -> Path:
    """``path`` as a ``Path`` if it is a readable file (with one of
    ``suffixes``, e.g. ``('.py', )``)."""
    file = Path(path)
    if not file.exists():
        raise ToolError(f'{option} {str(path)!r} does not exist')
    if not file.is_file():
        raise ToolError(f'{option} {str(path)!r} is a folder; give a file')
    if suffixes and file.suffix not in suffixes:
        raise ToolError(f'{option} {str(path)!r}: expected a '
                        f'{" or ".join(suffixes)} file')
    if not os.access(file, os.R_OK):
        raise ToolError(f'{option} {str(path)!r} is not readable')
    return file


def existing_dir(option: str, path, contains=()) -> Path:
    """``path`` as a ``Path`` if it is a folder holding the files
    ``contains`` (paths relative to it)."""
    folder = Path(path)
    if not folder.is_dir():
        what = 'is a file' if folder.exists() else 'does not exist'
        raise ToolError(f'{option} {str(path)!r} {what}; give a folder')
    missing = [name for name in contains if not (folder / name).is_file()]
    if missing:
        raise ToolError(f'{option} {str(path)!r} lacks {missing}; the '
                        f'folder must hold {list(contains)}')
    return folder


def config_file(option: str, path):
    """The parsed config at ``path`` (an ``mmengine.config.Config``)."""
    existing_file(option, path, ('.py', ))
    from mmengine.config import Config
    try:
        return Config.fromfile(str(path))
    except Exception as exc:
        raise ToolError(f'{option} {str(path)!r} does not parse as a '
                        f'config: {one_line(exc)}') from exc


def _writable_parent(option: str, path: Path) -> None:
    """The nearest existing ancestor of ``path`` is a writable folder."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ToolError(f'{option} {str(path)!r}: {str(parent)!r} is a file, '
                        'so no folder can be made below it')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ToolError(f'{option} {str(path)!r}: folder {str(parent)!r} is '
                        'not writable')


def output_file(option: str, path, suffixes: Sequence[str] = (),
                inputs: Iterable[str] = ()) -> Path:
    """``path`` as a ``Path`` if a file can be written there: not a folder,
    with one of ``suffixes`` when given, not one of the tool's ``inputs``
    (its missing parent folders are made when it is written, by
    :func:`write_file`)."""
    file = Path(path)
    if file.is_dir():
        example = file / f'out{suffixes[0] if suffixes else ""}'
        raise ToolError(f'{option} {str(path)!r} is an existing folder; give '
                        f'a file name, e.g. {example}')
    if suffixes and not str(path).lower().endswith(tuple(suffixes)):
        raise ToolError(f'{option} {str(path)!r} must end in '
                        f'{" or ".join(suffixes)}')
    for src in inputs:
        if src and os.path.exists(src) and file.exists() and \
                os.path.samefile(src, file):
            raise ToolError(f'{option} {str(path)!r} is the input file '
                            f'{str(src)!r}: refusing to overwrite the input; '
                            'write to a new file')
    _writable_parent(option, file)
    if file.exists() and not os.access(file, os.W_OK):
        raise ToolError(f'{option} {str(path)!r} is not writable')
    return file


def output_dir(option: str, path) -> Path:
    """``path`` as a ``Path`` if it is a folder or one can be made there
    (nothing is made here)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ToolError(f'{option} {str(path)!r} is an existing file; give a '
                        'folder')
    if folder.is_dir():
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ToolError(f'{option} {str(path)!r} is not writable')
    else:
        _writable_parent(option, folder)
    return folder


def write_file(path, data) -> None:
    """Write ``data`` (str or bytes) to ``path`` whole or not at all: into a
    temporary file beside it, then renamed; parent folders are made."""
    import tempfile
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode('utf-8') if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(raw)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as open() would make it
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def device(option: str, name: str) -> str:
    """``name`` ('cpu' or 'cuda') if torch can use it here."""
    import torch
    if name == 'cuda' and not torch.cuda.is_available():
        raise ToolError(f'{option} cuda: torch sees no CUDA device here; '
                        "use 'cpu'")
    return name


def timing_args(args) -> None:
    """The arguments every benchmark tool shares: ``--device``, ``--batch``,
    ``--threads``, ``--warmup``, ``--repeats``, ``--rounds``."""
    device('--device', args.device)
    count('--batch', args.batch)
    threads('--threads', args.threads)
    count('--warmup', args.warmup, 0)
    count('--repeats', args.repeats)
    count('--rounds', args.rounds)

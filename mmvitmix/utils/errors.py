"""The exception type whose message is the whole report to the user."""


class ToolError(ValueError):
    """A problem with what the user gave (a file, an argument, a config).

    The command-line tools (:func:`mmvitmix.apis.cli.run`) print its message
    as it is, on one line, without the exception's type name or a traceback.
    Defined here, below :mod:`mmvitmix.models` and :mod:`mmvitmix.apis`, so
    that every layer can raise it.
    """

"""The ``pytest-mooncake`` console command: subcommands around the plugin."""

from __future__ import annotations

import sys
from collections.abc import Callable

from pytest_mooncake.errors import USAGE_ERROR


def _doctor(argv: list[str]) -> int:
    """Run the preflight checks with the same settings sources as a pytest run."""
    import pytest

    return int(pytest.main(["--mooncake-doctor", "-p", "no:cacheprovider", *argv]))


def _simulate(argv: list[str]) -> int:
    from pytest_mooncake.tools.simulator import cli_main

    return cli_main(argv)


def _bundle(argv: list[str]) -> int:
    from pytest_mooncake.tools.bundle import cli_main

    return cli_main(argv)


def _report(argv: list[str]) -> int:
    from pytest_mooncake.report.cli import cli_main

    return cli_main(argv)


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "doctor": (_doctor, "check every configured endpoint (takes the --mooncake-* options)"),
    "simulate": (_simulate, "simulate cache strategies on a Mooncake trace"),
    "bundle": (_bundle, "build a wheelhouse bundle for an air-gapped GPU host"),
    "report": (_report, "build the evaluation report (md/html) from results JSON"),
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] not in COMMANDS and args[0] not in ("-h", "--help"):
        print(f"pytest-mooncake: unknown command {args[0]!r}; known: {', '.join(COMMANDS)} "
              "(pytest-mooncake --help says what each does)", file=sys.stderr)
        return USAGE_ERROR
    if not args or args[0] in ("-h", "--help"):
        lines = [f"  {name:10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
        print("usage: pytest-mooncake COMMAND [ARGS...]\n\ncommands:\n" + "\n".join(lines))
        return 0 if args and args[0] in ("-h", "--help") else 2
    handler, _ = COMMANDS[args[0]]
    return handler(args[1:])

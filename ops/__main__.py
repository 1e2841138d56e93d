"""Dispatch ``python -m ops COMMAND [options]`` to the module that implements COMMAND."""

import importlib
import sys

# Each module exposes main(argv) -> exit status.
COMMANDS = {
    "run": ("ops.run", "start the pipeline on a deployed environment and follow its steps"),
    "teardown": ("ops.teardown", "find and delete everything tagged with an environment"),
    "tunnel": ("ops.tunnel", "forward JupyterHub and the Spark history server through SSM"),
    "password": ("ops.password", "print a JupyterHub user's generated password"),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        # Help that was asked for goes to stdout and succeeds; a wrong call is an error.
        asked_for_help = bool(argv) and argv[0] in ("-h", "--help")
        stream = sys.stdout if asked_for_help else sys.stderr
        print("usage: python -m ops COMMAND [options]\n\ncommands:", file=stream)
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<10} {summary}", file=stream)
        return 0 if asked_for_help else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


# Guarded so that tests can import COMMANDS without running the dispatcher.
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

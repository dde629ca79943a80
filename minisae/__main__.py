"""`python -m minisae` and the `minisae` command.

The command's own module (apps/cli.py) loads inside main(), so that a Ctrl-C while it is still
loading ends as quietly as one later on, not with a traceback from the middle of an import.
"""
import sys


def main(argv=None):
    try:
        from .apps.cli import main as run
    except KeyboardInterrupt:
        print("minisae: interrupted", file=sys.stderr)
        return 130
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())

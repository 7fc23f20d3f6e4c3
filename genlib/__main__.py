"""`python -m genlib ...`: the command line (see genlib/cli.py)."""

from genlib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

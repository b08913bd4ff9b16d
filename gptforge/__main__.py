"""`python -m gptforge` is the `gptforge` command."""

from gptforge.flows.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

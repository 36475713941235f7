"""`python -m xmkd ...` (what `torchrun -m xmkd` runs) is the `xmkd` command."""

from xmkd.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

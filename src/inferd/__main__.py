"""``python -m inferd``."""

from inferd.cli import main

# Guarded: replica processes are spawned, and spawn imports the parent's main module again.
if __name__ == "__main__":
    raise SystemExit(main())

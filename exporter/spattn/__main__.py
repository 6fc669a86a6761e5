"""``python -m spattn`` runs the ``spattn`` command (where the console script is not on PATH)."""

from .cli import main

if __name__ == "__main__":
    main()

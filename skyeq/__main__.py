"""``python -m skyeq``: the same as the ``skyeq`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

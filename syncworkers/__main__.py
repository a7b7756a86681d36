"""``python -m syncworkers``: the ``syncworkers`` command."""

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    main()

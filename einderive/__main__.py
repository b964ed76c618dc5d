"""``python -m einderive``: the same as the ``einderive`` command."""

from .cli import main

main()

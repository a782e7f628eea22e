"""``python -m cipherseg``: the command line (same as the ``cipherseg`` script)."""

from cipherseg.cli import main

if __name__ == "__main__":
    main()

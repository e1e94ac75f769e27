"""``python -m federation`` runs the ``fedrag`` command."""

from federation.cli import main

main()

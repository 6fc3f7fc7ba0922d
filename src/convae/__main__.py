"""``python -m convae`` (also what ``torchrun -m convae`` runs)."""

from convae.cli import main

main()

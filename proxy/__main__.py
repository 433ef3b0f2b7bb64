"""`python -m proxy` runs the rpctape command line."""

from .cli import main

main()

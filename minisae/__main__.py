"""`python -m minisae` is the `minisae` command."""
import sys

from .cli import main

sys.exit(main())

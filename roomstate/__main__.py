"""``python -m roomstate``: the same as the ``roomstate`` command."""
import sys

from .cli import main

sys.exit(main())

"""``python -m memlib ...``: the ``memlib`` command (``memlib.api.cli``)."""
import sys

from .api.cli import main

sys.exit(main())

"""``python -m flows.cli``: the ``mmrag`` command without the console script."""
import sys

from flows.cli import main

sys.exit(main())

"""Run the ``rapidws`` command as ``python -m rapidws``."""

import sys

from .cli import main

sys.exit(main())

"""Run the ``rapidws`` command as ``python -m rapidws.cli``."""

import sys

from . import main

sys.exit(main())

"""python -m reptiledistil.report: the sweep report (report/sweep.py)."""

import sys

from .sweep import main

sys.exit(main())

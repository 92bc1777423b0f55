"""`python -m batchgen`: the `batchgen` command, for environments without the installed script."""

from __future__ import annotations

import sys

from batchgen.cli import main

sys.exit(main())

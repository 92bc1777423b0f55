"""`python -m batchgen.fakeserver`: run the fake Gemini API until interrupted."""

from __future__ import annotations

import sys

from batchgen.fakeserver.cli import main

sys.exit(main())

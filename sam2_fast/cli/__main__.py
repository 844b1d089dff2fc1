"""``python -m sam2_fast.cli``: the ``sam2-fast`` command."""

import sys

from sam2_fast.cli import main

sys.exit(main())

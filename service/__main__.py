"""``python -m service`` runs the ``reconad`` command."""

import sys

from service.cli import main

sys.exit(main())

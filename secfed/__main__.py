"""``python -m secfed`` runs the CLI."""

import sys

from secfed.cli import main

sys.exit(main())

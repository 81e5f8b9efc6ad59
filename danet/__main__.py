"""``python -m danet``: the ``danet`` command (:mod:`danet.cli`)."""

import sys

from danet.cli import main

sys.exit(main())

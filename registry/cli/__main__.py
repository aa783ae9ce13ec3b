"""``python -m registry.cli``: the same as the ``registry`` command.

Owns nothing but the call; imports only this package.
"""

import sys

from . import main

sys.exit(main())

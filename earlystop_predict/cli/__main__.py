"""``python -m earlystop_predict.cli``: the same as the ``earlystop-predict`` command."""

import sys

from earlystop_predict.cli.main import main

sys.exit(main())

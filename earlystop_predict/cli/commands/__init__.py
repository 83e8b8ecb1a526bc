"""Sub-commands of the ``earlystop-predict`` CLI, one module each (see ``cli.py``)."""

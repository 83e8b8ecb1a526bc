"""The real-curve collector: a resumable, parallel random search over small models.

:mod:`.families` declares the model families and their search spaces, :mod:`.train`
trains one run through the project's own callbacks, :mod:`.run` plans, runs and
resumes a collection and writes its datasheet.
"""

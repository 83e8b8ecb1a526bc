"""Training pipeline of the bundled accModels (needs the ``train`` extra)."""

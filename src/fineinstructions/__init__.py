"""fineinstructions: turn pre-training documents into grounded instruction→answer pairs (FineInstructions recipe)."""

__version__ = "0.1.0"

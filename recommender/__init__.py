"""recommender: knowledge bases, the meta-model, evaluation and the `catscans` CLI."""

__version__ = "0.1.0"

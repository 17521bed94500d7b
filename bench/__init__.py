"""SFTMix Bench harness: tasks, generation backends, judges, scorers, result store, tables."""
__version__ = "0.1.0"

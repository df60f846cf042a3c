"""The explorer indexer: the one writer of the explorer database."""

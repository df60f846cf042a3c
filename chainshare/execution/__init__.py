"""Execution: the runtime that runs system contracts, and the contracts themselves."""

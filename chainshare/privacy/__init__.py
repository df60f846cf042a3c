"""Privacy computing across agencies: secure aggregation of several owners' datasets (joint queries
answered from secret shares, under differential privacy) — see ``aggregate``."""

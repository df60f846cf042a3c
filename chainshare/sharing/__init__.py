"""Data sharing, usable but not visible: the encrypted dataset vault (vault.py), delivery to a
granted node with personal columns pseudonymized (pseudonym.py), dataset schemas (schema.py) and
compute-to-data aggregate queries under a minimum-group privacy rule (compute.py)."""

"""Operating a node: consistent backups of a running node's ledger and restoring a data directory
from one (backup.py). Imports the ledger and verification code; never node, replica or p2p."""

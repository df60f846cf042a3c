"""Consensus: PoA proposer rotation plus BFT finality with BLS quorum certificates."""

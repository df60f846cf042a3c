"""The ledger: types, Merkle trees, Ethereum transactions, state commitment, storage and the chain."""

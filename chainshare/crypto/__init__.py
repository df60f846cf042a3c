"""Cryptographic primitives: hashing, secp256k1 accounts, BLS12-381, keystores, consortium CA."""

"""Helpers shared by the tests (program generators, brute-force oracles)."""

"""Fixtures for attack tests; the trained small CNNs live in tests/conftest.py."""

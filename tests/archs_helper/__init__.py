"""Importable model classes for tests/test_architectures.py (also used by subprocesses)."""

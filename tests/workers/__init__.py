"""Helper programs the tests run in their own processes (and CI runs before the tests)."""

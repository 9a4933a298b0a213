"""skyeq benchmark harness: ``python -m benchmarks NAME [options]``."""

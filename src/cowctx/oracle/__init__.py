"""The brute-force truth about who maps what, and the checks built on it."""

"""Tests of the chaos harness: the pure checks, and the short profile end to end."""

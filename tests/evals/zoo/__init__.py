"""Tests of evals.zoo."""

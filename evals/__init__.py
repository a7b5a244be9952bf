"""Evals: task suites and checkers, replay and live runners, metrics, reports, and the model zoo."""

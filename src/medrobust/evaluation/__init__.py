"""Evaluation: pure metric functions (numpy in, numbers out) and, later, the experiment runner."""

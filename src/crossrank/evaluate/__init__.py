"""Evaluation: compare rankings and measure quality."""

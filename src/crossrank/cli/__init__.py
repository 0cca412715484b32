"""The ``crossrank`` command line."""

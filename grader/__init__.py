"""The attention kit's autograder: ``python -m grader --help``."""

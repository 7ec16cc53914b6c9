"""Loads the kit's pytest plugin for every test run from this folder.

In the staff repository (the one with ``solutions/``) the task tests check the
reference solutions unless ``ATTN_KIT_IMPL`` says otherwise, so the kit's own
``pytest`` run proves the tests pass with a correct implementation. In a
student's handout there is no ``solutions/`` and the tests check the student's files.
"""
import os
from pathlib import Path

from harness import spawn

spawn.start_early()  # the grader's judge: the worker starts while pytest imports torch

_SOLUTIONS = Path(__file__).resolve().parent / "solutions"
if _SOLUTIONS.is_dir():
    os.environ.setdefault("ATTN_KIT_IMPL", str(_SOLUTIONS))

pytest_plugins = ["harness.pytest_plugin"]

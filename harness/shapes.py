"""The old name of :mod:`harness.argument_checks`, kept so a student file written against an
earlier handout (``from harness.shapes import check_heads, ...``) still imports."""
from .argument_checks import *  # noqa: F401,F403
from .argument_checks import check_heads, check_hidden_states  # noqa: F401

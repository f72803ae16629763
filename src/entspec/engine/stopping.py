"""The stopping rules under their original import path: everything lives in `entspec.rules`."""

from ..rules import *  # noqa: F401,F403
from ..rules import __all__  # noqa: F401

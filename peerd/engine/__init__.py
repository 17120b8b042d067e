"""The engine of a node: plan, claim, execute and record the slots of the tasks it owns.

:class:`Engine` (:mod:`peerd.engine.facade`) is the facade; its module docstring maps the
modules of this package and what each owns.
"""

from peerd.engine.facade import Engine
from peerd.engine.stats import EngineStats, Load

__all__ = ["Engine", "EngineStats", "Load"]

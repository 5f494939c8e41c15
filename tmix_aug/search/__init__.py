"""Learning mixers (the search stage): ``search(SearchConfig(...))`` or ``python -m tmix_aug.search``."""
from .evaluate import compare_mixers, paired_gap
from .config import SearchConfig
from .loop import search
from .objective import SearchObjective

__all__ = ["SearchConfig", "SearchObjective", "compare_mixers", "paired_gap", "search"]

"""``lmbricks tour``: one command that shows the toolkit on the default model and writes a report."""

from lmbricks.tour.run import SkipSection, TourContext, TourFailed, run_tour

__all__ = ["SkipSection", "TourContext", "TourFailed", "run_tour"]

"""``lmbricks tour``: one command that shows the toolkit on the default model and writes a report."""

from lmbricks.tour.run import TourContext, run_tour

__all__ = ["TourContext", "run_tour"]

"""The fair comparison study (``lorazoo-fair``): lr search per method, seeds at the tuned lr, and the report.

Hydra multiruns of ``run.py`` do all training; this package only plans which runs to launch, reads their
records back and turns them into tables and plots. Modules:
  ``halving``  successive-halving bookkeeping over a log lr grid, edge detection and widening (pure);
  ``stats``    the two reporting protocols and paired bootstrap differences (pure);
  ``fair``     the command: launches the search and the seeds, resumable by rerunning it;
  ``report``   the results file from the run records on disk.
"""

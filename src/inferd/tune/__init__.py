"""``inferd tune``: the serving configuration with the most throughput under a p99 target.

``tuner.tune(TuneSettings(...))`` runs it (the command line is ``inferd.cli.tune``); docs/tune.md
explains the search. The pure parts (``space``, ``search``, ``ramp``, ``confirm``,
``measurement``) import nothing that does I/O, so the search and its confirmation are tested
on fake measured models.
"""

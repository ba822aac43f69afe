"""The domain core: events, state machines, errors, workflows, runs and steps, the ready queue,
the symbol table, counters, the coordinator and the dispatcher, and the strategy API.

It imports only itself and :mod:`fastpath`. Its hot modules (``engine.COMPILED_MODULES``:
counters, symbols, runs, records, runlog, dispatcher, coordinator) are compiled in place from
their ``.py`` + ``.pxd`` (``engine.IMPLEMENTATION`` says which build runs). Import the modules
themselves; this package re-exports nothing, so importing one module does not drag in the
others.
"""

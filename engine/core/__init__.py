"""The domain core: events, state machines, errors, workflows, runs and steps, the ready queue,
the symbol table, counters, the coordinator and the dispatcher; orders (the broker and risk
protocols, ``ctx.submit_order``) and :mod:`engine.core.strategy`, the one module strategy code
imports.

It imports only itself and :mod:`fastpath`. Its hot modules (counters, symbols, runs, flow) are
compiled in place from their ``.py`` + ``.pxd`` (``engine.IMPLEMENTATION`` says which build
runs). Import the modules themselves; this package re-exports nothing, so importing one module
does not drag in the others.
"""

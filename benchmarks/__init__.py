"""Benchmarks of moa_graph against hand-written baselines, over real HTTP to the stand-in.

One command runs every figure and writes the JSON results, the Markdown report and the plots:

    python -m benchmarks run            # full run (~10 min on 2 cores): docs/benchmarks.md
    python -m benchmarks run --quick    # smoke run (seconds): tiny sizes, into --out

The stand-in server (`moa-graph stub-server`) runs in a process of its own, so its CPU is not
billed to the client; in a full run every contender also gets a worker process of its own
(its CPU time and peak RSS are its own), and the contenders take turns, cell by cell, so
whatever the machine does during the run hits them alike. See docs/benchmarks.md.
"""

"""Performance of the search itself: searchers replayed on a tabular benchmark.

``python -m benchmarks.search_table`` trains every recipe of a grid once (and the best
ones with more seeds) through the sweep machinery and stores the results in one table;
``python -m benchmarks.search`` replays random search, TPE, TPE + ASHA, their
canary-constrained variants and racing on that table over many sampler seeds, in seconds.
This is how HPOBench, LCBench and NAS-Bench compare optimisers: each configuration is paid
for once, every searcher then reads its results instead of training.
"""

"""`/usage/*` reports run in a process of their own, a few at a time: pricing a month of the
rollup row by row is seconds of pure Python, which on the event loop that serves `/v1` (or in a
thread of that process, through the GIL) would stall every call of the worker."""

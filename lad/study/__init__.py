"""``lad study``: a grid of RL runs from one warm start, resumable, with one table and figures."""

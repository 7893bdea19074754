"""Per-record audit metrics: plain numpy functions of (map, mask / boxes, model callable).

Every map here is a 2-D relevance map R [H, W] >= 0, by default ``relevance(gradient)`` =
the sum over channels of |gradient| (not percentile-clipped: the metrics see the raw mass).
"""

"""The audit's per-record stage, on the workers that make the maps: each (record, method)'s
row (rows.py) with its hotspots (hotspots.py), the published row line (lines.py) and the
deletion / insertion curves the model handler adds (curves.py). Plain numpy, no Beam."""

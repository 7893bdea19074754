"""The audit's model-backed stage: the causal test of each flag (interventions.py, run over
an audit's flags by confirm.py) and the cascading randomisation sanity check (sanity.py).
Loads the model; no Beam."""

"""The audit's dataset stage: rows aggregated per group (aggregates.py), strategies and
their flags (strategies.py, spectral.py, flags.py), patterns repeated across a class
(feature_groups.py), flags relative to the other classes (relative.py), slices (slices.py),
and the whole as audit.json (audit_json.py). Plain numpy, no Beam, no model."""

import os

# scikit-learn's joblib otherwise starts a subprocess (lscpu) to count the physical cores;
# set before any module of this stage imports scikit-learn
os.environ.setdefault("LOKY_MAX_CPU_COUNT", str(os.cpu_count() or 1))

"""The dataset audit, by stage: ``record/`` (per record, on the workers), ``dataset/``
(aggregation per class, cluster and slice), ``causal/`` (model-backed tests of the flags,
the sanity check), ``report/`` (report.html, drift) and ``metrics/`` (the per-record maths
all of them read). The Beam wiring sits here alone: the job's stage (job_stage.py), where
an audit's row lines come from (sources.py) and the audit's pipeline (pipeline.py)."""

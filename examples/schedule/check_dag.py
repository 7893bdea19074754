"""Load examples/schedule/airflow_dag.py with Airflow's DagBag (run with an interpreter that
has Airflow, never the project's): no import errors, the three tasks in order, the CLI
commands they run. Exits non-zero on any problem.

    python3 -m venv .airflow-venv && .airflow-venv/bin/pip install apache-airflow
    .airflow-venv/bin/python examples/schedule/check_dag.py
"""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

try:  # Airflow 3.1+
    from airflow.dag_processing.dagbag import DagBag
except ImportError:  # Airflow 2
    from airflow.models.dagbag import DagBag

bag = DagBag(dag_folder=str(HERE / "airflow_dag.py"))
problems = [f"import error in {path}: {error}" for path, error in bag.import_errors.items()]
dag = bag.dags.get("saliency_audit")
if dag is None:
    problems.append(f"no DAG saliency_audit (found {sorted(bag.dags)})")
else:
    order = (
        [t.task_id for t in dag.topological_sort()]
        if hasattr(dag, "topological_sort")
        else [t.task_id for t in sorted(dag.tasks, key=lambda t: len(t.upstream_task_ids))]
    )
    if order != ["explain", "audit", "gate"]:
        problems.append(f"tasks in order {order}, expected explain, audit, gate")
    commands = {t.task_id: t.bash_command for t in dag.tasks}
    for task, needed in (("explain", " run --config "), ("audit", " audit --config "),
                         ("gate", " drift ")):  # fmt: skip
        if needed not in commands.get(task, ""):
            problems.append(f"task {task} does not call `python -m pipeline{needed}`")
for line in problems:
    print(f"error: {line}", file=sys.stderr)
if not problems:
    print(f"DagBag: saliency_audit loads, tasks {order}")
sys.exit(1 if problems else 0)

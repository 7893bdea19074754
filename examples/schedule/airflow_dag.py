"""Airflow DAG: the nightly saliency audit as three tasks, each a plain CLI call.

    explain  python -m pipeline run    (incremental: only new images; the audit is its own task)
    audit    python -m pipeline audit  (all published records; archived under audits/<UTC>/;
                                        compared with the previous audit, drift.json)
    gate     python -m pipeline drift  (the previous archived audit vs this one, --fail-on:
                                        exit 6, a failed task, when attention regressed)

Set PROJECT (the checkout with its .venv) and CONFIG in the Airflow Variables
saliency_project / saliency_config, or edit the defaults below. Airflow runs in its own
environment: the tasks call the project's own interpreter, so Airflow never enters the
project's venv (and the project never imports Airflow). Tested by loading it with DagBag
in a separate venv: examples/schedule/check_dag.py.
"""

import datetime

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.operators.bash import BashOperator

PROJECT = "{{ var.value.get('saliency_project', '/srv/saliency-pipeline') }}"
CONFIG = "{{ var.value.get('saliency_config', 'configs/nightly.yaml') }}"
OUTPUT = "{{ var.value.get('saliency_output', 'out/nightly') }}"
RULES = "--fail-on pointing:-0.05 --fail-on energy_in_box:-10% --fail-on flags:+0"
PYTHON = f"cd {PROJECT} && .venv/bin/python -m pipeline"

with DAG(
    dag_id="saliency_audit",
    description="Nightly: explain new images, audit every record, gate on attention drift",
    schedule="30 2 * * *",
    start_date=datetime.datetime(2026, 12, 1),
    catchup=False,
    max_active_runs=1,  # one run at a time per output dir (the job also holds a lock)
    default_args={"retries": 1, "retry_delay": datetime.timedelta(minutes=10)},
    tags=["saliency", "audit"],
) as dag:
    explain = BashOperator(
        task_id="explain",
        bash_command=f"{PYTHON} run --config {CONFIG} --set run.incremental=true "
        "--set audit.enabled=false -q",
    )
    audit = BashOperator(
        task_id="audit",
        bash_command=f"{PYTHON} audit --config {CONFIG} --set run.audit_drift=previous "
        "--set 'run.audit_fail_on=[]'",
        retries=0,
    )
    # The previous archived audit against this one; skipped on the very first night.
    gate = BashOperator(
        task_id="gate",
        bash_command=(
            f"cd {PROJECT} && previous=$(ls {OUTPUT}/audits | grep -v '^latest$' | sort "
            f"| tail -n 2 | head -n 1) && latest=$(cat {OUTPUT}/audits/latest) && "
            f'if [ "$previous" = "$latest" ]; then echo "first audit: nothing to compare"; '
            f"else .venv/bin/python -m pipeline drift {OUTPUT}/audits/$previous/audit.json "
            f"{OUTPUT}/audits/$latest/audit.json {RULES}; fi"
        ),
        retries=0,
    )
    explain >> audit >> gate

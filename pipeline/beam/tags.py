"""Tags of the tagged outputs of the Beam transforms here (one declaration each)."""

FAILURES = "failures"  # the failure output of every DoFn that can fail
SKIPPED = "skipped"  # SkipDone: inputs an incremental run already did

"""Synthetic shortcut scenes (natural photo backgrounds, planted marks) and the demo."""

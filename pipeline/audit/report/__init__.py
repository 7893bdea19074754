"""What people read: audit.json (+ its PNGs) as report.html (html.py, templates/), and what
changed between two audits with its gating rules (drift.py). No Beam, no TensorFlow."""

"""The Beam side: sources, the RunInference model handler, sinks, the public ExplainImages
PTransform and the CLI's crash-safe run. No gradient maths here."""

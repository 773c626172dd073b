"""Safe change: sticky canary assignment, rollout plans and their analysis."""

"""The adversarial suite: a hostile client against a real gateway (docs/guarantees.md,
"Hostile input")."""

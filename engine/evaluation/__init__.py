"""Evaluation: frames, the column-wise evaluator, the rule state machine, events."""

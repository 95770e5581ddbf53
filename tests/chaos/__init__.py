"""The chaos suite: faults against a private stack, a history of what happened, a checker."""

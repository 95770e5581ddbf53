"""The tidings runtime: stage loops, commits, the stages and the CLI."""

"""Everything that decides a verdict: checks, the sandbox they run in, IAM semantics, the LLM judge, scoring."""

"""Who is asking (issue 13); this branch carries only the contract's minimal principal."""

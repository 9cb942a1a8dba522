"""Forge's `modules_forge` package (dfdcbab6 has it at the repository root): its presence, with
`backend`, is how fabric.hosts recognises Forge."""

"""Emulated pump hardware, virtual clock and ports (issue 3)."""

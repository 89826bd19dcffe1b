"""Per-node configuration, changed live (issue 17): which named config applies, and applying it as a diff."""

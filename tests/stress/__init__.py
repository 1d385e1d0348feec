"""The reliability suite: storm, soak, faults, hygiene (see RELIABILITY.md)."""

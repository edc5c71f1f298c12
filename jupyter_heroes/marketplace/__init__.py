"""marketplace."""

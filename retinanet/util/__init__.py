"""Small shared helpers: distributed set-up."""

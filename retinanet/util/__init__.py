"""Small shared helpers: atomic file writes (``io``), one problem-report type for every checker
(``problems``), tests of parsed JSON values (``values``), device choice (``device``) and
distributed set-up (``distributed``)."""

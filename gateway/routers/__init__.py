"""One router per area of the API, all mounted under /api/v1."""

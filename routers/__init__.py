"""Query-level routers: pick the route that should answer a request as a whole."""

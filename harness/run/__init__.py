"""A run and its cells: planning, the runner, steps, backing stores, the ledger, safety, user namespaces, fleets."""

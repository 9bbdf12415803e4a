"""Where models run: replicas (one loaded copy each), the pool that routes batches to them, and
the manager that loads every model of a repository."""

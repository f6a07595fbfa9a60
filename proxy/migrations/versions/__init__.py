"""The ledger's Alembic revisions, oldest first by number."""

"""Usage reports read from the ledger: summaries, raw records, traces; shared by API and CLI."""

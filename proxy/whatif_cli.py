"""What-if reports for the terminal: `metering-proxy report --to-model/--batch/--cache-prompt`."""

from __future__ import annotations

import csv
import io

from proxy.ledger.whatif import WhatIfDocument, WhatIfGroupDocument
from proxy.terminal import aligned_table

_COLUMNS = ("calls", "unpriced_calls", "actual_cost_usd", "scenario_cost_usd", "saving_usd")


def render_what_if(document: WhatIfDocument, output_format: str) -> str:
    """The report as `json` (the API's document), `csv` or an aligned `table`."""
    if output_format == "json":
        return document.model_dump_json(indent=2) + "\n"
    if output_format == "csv":
        return _csv(document)
    return _table(document)


def _keys(document: WhatIfDocument) -> list[str]:
    return list(document.groups[0].key) if document.groups else []


def _csv(document: WhatIfDocument) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    keys = _keys(document)
    writer.writerow([*keys, *_COLUMNS])
    for group in document.groups:
        values = group.model_dump()
        writer.writerow([*(group.key[k] for k in keys), *(values[c] for c in _COLUMNS)])
    return out.getvalue()


def _table(document: WhatIfDocument) -> str:
    keys = _keys(document)
    header = [*(keys or [""]), "calls", "unpriced", "actual", "what-if", "saving"]

    def figures(group: WhatIfGroupDocument) -> list[str]:
        amounts = (group.actual_cost_usd, group.scenario_cost_usd, group.saving_usd)
        return [f"{group.calls:,}", f"{group.unpriced_calls:,}", *(f"${a}" for a in amounts)]

    rows = [[*(group.key[k] for k in keys), *figures(group)] for group in document.groups]
    total = ["total", *([""] * (max(len(keys), 1) - 1)), *figures(document.totals)]
    scenario = document.scenario
    changes = [
        f"on {scenario.model}" if scenario.model else "",
        "through the Batch API" if scenario.batch else "",
        "with the prompt cached" if scenario.cache_prompt else "",
    ]
    title = f"What {document.since:%Y-%m-%d} to {document.until:%Y-%m-%d} would have cost " + (
        ", ".join(change for change in changes if change)
    )
    notes = []
    if document.totals.unpriced_calls:
        notes.append(f"{document.totals.unpriced_calls:,} calls could not be priced: not in sums.")
    lines = aligned_table(header, rows, total, text_columns=max(len(keys), 1))
    return "\n".join([title, "", *lines, *([""] if notes else []), *notes]) + "\n"

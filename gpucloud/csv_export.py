"""CSV downloads, streamed: the dashboard's exports (usage, ledger, payouts) write their rows
through :func:`csv_response`, so a large export never sits in memory."""

from __future__ import annotations

import csv
from collections.abc import Iterable

from django.http import StreamingHttpResponse


class _Echo:
    """A file-like object whose write returns the line: csv.writer feeding a streamed response."""

    def write(self, value):
        return value


def csv_response(filename: str, header: list[str], rows: Iterable[list]) -> StreamingHttpResponse:
    """``header`` then ``rows`` (lazily: a generator over a queryset's iterator) as a CSV download."""
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(header)
        for row in rows:
            yield writer.writerow(row)

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response

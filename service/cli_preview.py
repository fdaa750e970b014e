"""``jsoc-bulk submit --dry-run``: a job preview (POST /jobs/preview) as readable lines."""

from __future__ import annotations

from typing import Any

from service.cli_progress import human_bytes


def print_preview(preview: dict[str, Any]) -> None:
    """Records, bytes, exports, first/last record and record sets, one per line."""
    print(preview.get("message") or f"{preview.get('records', 0)} record(s)")
    if preview.get("recordset"):
        print(f"  record set  {preview['recordset']}")
    if not preview.get("records"):
        return
    print(f"  records     {preview['records']}")
    print(f"  size        about {human_bytes(preview.get('est_bytes'))}")
    print(f"  exports     {preview.get('exports')}")
    print(f"  first       {preview.get('first_record')}")
    print(f"  last        {preview.get('last_record')}")
    shown = preview.get("export_recordsets") or []
    for i, recordset in enumerate(shown, 1):
        print(f"  export {i:<4} {recordset}")
    if len(shown) < int(preview.get("exports") or 0):
        print(f"  …           ({preview['exports'] - len(shown)} more exports)")

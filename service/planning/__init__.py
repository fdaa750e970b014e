"""Planning: a job's slots, its record-set strings and its chunks, computed without asking
JSOC or the database (the plan and follow stages do that, and call in here).

``timeline`` (the slot grid and a job's sampled slots) → ``recordsets`` (record-set strings)
→ ``chunks`` (slot-aligned chunks, splitting) → ``stored`` (chunks as the database takes and
gives them) and ``cursor`` (the next chunks after a job's cursor) → ``follow`` (mirrors).
"""

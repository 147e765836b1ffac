"""Tables as strict JSON: one conversion for every ``--format json`` payload and report.

NaN (and pandas' NA) become None, numpy scalars stay plain Python values, so ``json.dumps`` with
``allow_nan=False`` never meets a NaN.
"""

from __future__ import annotations

import pandas as pd


def json_records(df: pd.DataFrame) -> list[dict]:
    """``df`` as a list of row dicts, missing values as None."""
    return df.astype(object).where(df.notna(), None).to_dict(orient="records")

"""The documentation's generators live in docs/gen/ (run by MkDocs, not installed)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "gen"))

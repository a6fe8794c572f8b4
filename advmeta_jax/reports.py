"""Tables of results: Markdown for the console and README, JSON for tools."""

from __future__ import annotations

import json
from typing import Dict, List, Sequence


def format_accuracy(mean: float, ci95: float) -> str:
  """`0.4812, 0.0123` → `"48.12 ± 1.23"` (percent)."""
  return f"{100 * mean:.2f} ± {100 * ci95:.2f}"


def markdown_table(header: Sequence[str], rows: List[Sequence]) -> str:
  """A GitHub-flavoured Markdown table."""
  lines = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
  return "\n".join(lines)


def write_json(path: str, payload: Dict) -> None:
  with open(path, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)


def write_text(workdir: str, name: str, text: str) -> None:
  with open(f"{workdir}/{name}", "w") as f:
    f.write(text + "\n")

"""Markdown tables: the one formatter of every report table (reports.py,
comparisons.py)."""

from typing import List, Sequence


def markdown_table(header: Sequence[str], rows: List[Sequence]) -> str:
  """A GitHub-flavoured Markdown table."""
  lines = ["| " + " | ".join(map(str, header)) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
  return "\n".join(lines)


def case_label(case: str, attack: str) -> str:
  """`clean/adv (pgd ε=8/255)`, or the case alone without an attack."""
  return case if attack == "none" else f"{case} ({attack})"

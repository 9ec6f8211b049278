"""Prompt templates as data.

Template sets ship as text files in ``coreg/annotate/templates/`` (one template per line, each
containing ``{}`` where the class name goes):

* ``paper``: the 27 templates of the reference implementation's default list (spec 1.2), verbatim
  and in order, no full stops. Entry 0, ``a photo of a {}``, is the single template t0 of the
  zero-shot baseline (spec 1.5).
* ``paper-full``: the 80-template list (spec 1.2), verbatim and in order.

Any other value is read as a path to a text file of the same format. The prompt for template t
and class name n is exactly ``t.format(n)``: plain substitution, the name verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from coreg.errors import CoregError


class TemplateError(CoregError):
    """A template set is unknown, unreadable or holds a line without ``{}``."""


@dataclass(frozen=True)
class TemplateSet:
    """A named, ordered list of prompt templates.

    Attributes:
        name: the set name (``paper``, ``paper-full``) or the file path it was read from.
        templates: the P template strings, each with one ``{}``.
    """

    name: str
    templates: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.templates)


def list_template_sets() -> list[str]:
    """Names of the template sets shipped with coreg."""
    root = resources.files("coreg.annotate") / "templates"
    return sorted(p.name[: -len(".txt")] for p in root.iterdir() if p.name.endswith(".txt"))


def parse_templates(text: str, *, source: str) -> tuple[str, ...]:
    """Parse template-file text: one template per line, blank lines skipped.

    Lines are kept verbatim apart from the line ending (a template's spacing and punctuation
    change the prompt).

    Args:
        text: the file content.
        source: where the text came from, for error messages.

    Raises:
        TemplateError: a line has no ``{}`` or other braces ``format`` cannot fill, or no lines.
    """
    out: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if "{}" not in line:
            raise TemplateError(f"{source}:{lineno}: template {line!r} has no '{{}}' for the class name")
        try:
            line.format("x")
        except (IndexError, KeyError, ValueError) as e:
            raise TemplateError(f"{source}:{lineno}: template {line!r} is not a valid format string "
                                f"({type(e).__name__}: {e}); use exactly one '{{}}' and no other braces") from None
        out.append(line)
    if not out:
        raise TemplateError(f"{source}: no templates (one per line, each containing '{{}}')")
    return tuple(out)


def load_templates(spec: str) -> TemplateSet:
    """Resolve a template set name or file path.

    Args:
        spec: ``paper``, ``paper-full`` or the path of a text file with one template per line.

    Raises:
        TemplateError: unknown name (and no such file), unreadable file, invalid line.
    """
    if spec in list_template_sets():
        text = (resources.files("coreg.annotate") / "templates" / f"{spec}.txt").read_text(encoding="utf-8")
        return TemplateSet(name=spec, templates=parse_templates(text, source=f"template set {spec}"))
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TemplateError(f"unknown template set {spec!r}: not one of {', '.join(list_template_sets())} "
                            "and not a file (one template per line, each containing '{}')")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise TemplateError(f"cannot read template file {path}: {e}") from None
    return TemplateSet(name=str(path), templates=parse_templates(text, source=str(path)))


def build_prompts(templates: tuple[str, ...] | list[str], names: list[str]) -> list[str]:
    """All prompts in template-major order: ``[t.format(n) for t in templates for n in names]``."""
    return [t.format(n) for t in templates for n in names]

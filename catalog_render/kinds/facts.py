"""Key facts of a product for label and comparison images: from its catalog attributes, and parsed
from its free-text description (and title) when the attributes do not say.

Pure functions over catalog rows (dicts with ``title``, ``description``, ``category``,
``attributes``); no images. Row headers are in the job's language (:data:`HEADERS`); values are the
catalog's own text, never translated.

Parsing rules (regular expressions, English descriptions; the IKEA and fashion catalogs are
English):

* material: the words of :data:`MATERIALS` in the order the text names them (with a percentage
  when one precedes the word: ``100% cotton``), at most 3;
* size: the ``size`` attribute, else the first dimensions in the text (``84x40x216 cm``,
  ``Ø 38 cm``, ``Length: 120 cm``);
* care: the first sentence naming washing, drying, ironing, bleaching or wiping;
* about: the description's first other sentence (a label's last fact);
* colour swatch: each colour named in the colour value (``Rattan,black``: two), as the xkcd colour
  survey's / CSS's sRGB of the name (catalog_render.kinds.recolour.reference_lab); none for names
  that are not a single colour (Multi, Assorted colours).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Scraped page text that starts (or sits inside) many IKEA descriptions: removed before parsing.
SCRAPED = re.compile(r"\s*View more product information\s*", re.I)
MATERIALS = ("stainless steel", "solid wood", "cotton", "polyester", "wool", "leather", "linen", "silk", "rattan", "bamboo", "oak", "pine",
             "birch", "beech", "walnut", "acacia", "steel", "aluminium", "aluminum", "glass", "plastic", "polypropylene", "polyethylene",
             "ceramic", "stoneware", "porcelain", "earthenware", "denim", "viscose", "nylon", "elastane", "spandex", "lycra", "canvas",
             "suede", "velvet", "jute", "wood", "metal", "rubber", "foam", "felt", "fleece", "cashmere", "brass", "marble", "paper", "cork")
CARE = re.compile(r"[^.!?]*\b(machine wash|hand wash|wash|dry clean|tumble dry|iron|bleach|wipe)\w*\b[^.!?]*[.!?]?", re.I)
DIMENSIONS = re.compile(r"(?:Ø\s*)?\d+(?:[.,]\d+)?(?:\s*[x×]\s*\d+(?:[.,]\d+)?){0,2}\s*(?:cm|mm|m|in|inch|\")(?![a-z])", re.I)
UNKNOWN = {"", "na", "n/a", "none", "null", "-", "nan"}

#: Row headers by language (ISO 639-1). Values stay in the catalog's own words.
HEADERS = {
    "en": {"title": "Product", "price": "Price", "colour": "Colour", "material": "Material", "size": "Size", "care": "Care", "category": "Type",
           "gender": "For", "usage": "Use", "season": "Season", "brand": "Brand", "about": "About", "no_price": "not a number"},
    "de": {"title": "Produkt", "price": "Preis", "colour": "Farbe", "material": "Material", "size": "Größe", "care": "Pflege", "category": "Art",
           "gender": "Für", "usage": "Anlass", "season": "Saison", "brand": "Marke", "about": "Info", "no_price": "keine Zahl"},
    "fr": {"title": "Produit", "price": "Prix", "colour": "Couleur", "material": "Matière", "size": "Taille", "care": "Entretien",
           "category": "Type", "gender": "Pour", "usage": "Usage", "season": "Saison", "brand": "Marque", "about": "À propos", "no_price": "pas un nombre"},
    "es": {"title": "Producto", "price": "Precio", "colour": "Color", "material": "Material", "size": "Talla", "care": "Cuidado",
           "category": "Tipo", "gender": "Para", "usage": "Uso", "season": "Temporada", "brand": "Marca", "about": "Acerca de", "no_price": "no es un número"},
}
ALIASES = {"color": "colour", "type": "category"}


@dataclass
class Fact:
    """One line of a label or one row of a comparison: ``key`` (colour, material, size, care, price,
    or an attribute name), ``header`` (in the job's language), ``value`` (text), ``swatches``
    (sRGB triples to draw before the value), ``problem`` (why the value is shown as it is, or None)."""

    key: str
    header: str
    value: str
    swatches: list[tuple[int, int, int]] = field(default_factory=list)
    problem: str | None = None


def header(key: str, language: str) -> str:
    key = ALIASES.get(key, key)
    table = HEADERS.get(language, HEADERS["en"])
    return table.get(key) or HEADERS["en"].get(key) or key.replace("_", " ").capitalize()


def description_text(description: str | None) -> str:
    """The description without the scraped "View more product information" text, whitespace collapsed."""
    return " ".join(SCRAPED.sub(" ", description or "").split())


def materials(text: str) -> list[str]:
    """Materials named in ``text`` (see the module doc), at most 3, as written (``100% cotton``)."""
    found: list[tuple[int, str]] = []
    taken: list[tuple[int, int]] = []
    for m in MATERIALS:
        for hit in re.finditer(rf"(?:(\d{{1,3}})\s*%\s*)?\b{re.escape(m)}\b", text, re.I):
            if any(a <= hit.start() < b for a, b in taken):
                continue  # "stainless steel" already holds "steel"
            taken.append((hit.start(), hit.end()))
            name = hit.group(0).strip()
            if not any(n.lower().endswith(m) for _, n in found):
                found.append((hit.start(), name[0].upper() + name[1:] if not name[0].isdigit() else name))
            break
    return [n for _, n in sorted(found)][:3]


def first_sentence(text: str, skip: str | None = None) -> str | None:
    """The first sentence of ``text`` that is not ``skip`` (the care sentence), or None."""
    for m in re.finditer(r"[^.!?]+[.!?]?", text):
        sentence = m.group(0).strip()
        if sentence and sentence != skip and len(sentence) > 3:
            return sentence
    return None


def care(text: str) -> str | None:
    m = CARE.search(text)
    return m.group(0).strip() if m else None


def dimensions(text: str) -> str | None:
    m = DIMENSIONS.search(text)
    return m.group(0).strip() if m else None


def swatches(colour: str | None) -> list[tuple[int, int, int]]:
    """sRGB of each single colour named in ``colour`` (split at , / & + and "and"; a hyphenated
    name that is not a colour, ``Black-brown``, at its hyphens), at most 3."""
    import numpy as np
    from skimage.color import lab2rgb

    from catalog_render.kinds.recolour import reference_lab

    out = []
    for part in re.split(r"\s*(?:,|/|&|\+|\band\b)\s*", colour or ""):
        # "Black-brown": the whole name when it is a colour, else each hyphenated piece that is one
        for name in [part] if reference_lab(part.strip() or None) is not None else part.split("-"):
            lab = reference_lab(name.strip()) if name.strip() else None
            if lab is not None:
                rgb = np.clip(np.rint(lab2rgb(np.asarray(lab, float)[None, None]) * 255), 0, 255).astype(int)[0, 0]
                out.append(tuple(int(v) for v in rgb))
    return out[:3]


def attribute(row: dict, name: str) -> str | None:
    """A catalog value: ``title``/``category``/``description``/``product_id``, ``attributes.<k>`` or a
    bare attribute name; None when empty or a placeholder (NA, none, -)."""
    attrs = row.get("attributes") or {}
    attrs = attrs if isinstance(attrs, dict) else dict(attrs)
    key = name.split(".", 1)[1] if name.startswith("attributes.") else name
    v = row.get(key) if key in ("title", "category", "description", "product_id") else attrs.get(key, attrs.get({"colour": "color"}.get(key, "")))
    v = None if v is None else " ".join(str(v).split())
    return None if v is None or v.lower() in UNKNOWN else v


def price_value(text: str | None) -> float | None:
    """A price as a number (``1,299.00``, ``₹ 799``, ``12.5``), or None when it is not one."""
    if text is None:
        return None
    t = re.sub(r"[^\d.,\-]", "", text)
    if not t or not re.fullmatch(r"\d{1,3}(,\d{3})*(\.\d+)?|\d+([.,]\d+)?", t):
        return None
    if re.fullmatch(r"\d+,\d{1,2}", t):
        t = t.replace(",", ".")
    return float(t.replace(",", ""))


def fact(row: dict, name: str, language: str, currency: str = "") -> Fact | None:
    """The Fact for column ``name`` of ``row`` (see :func:`attribute`), with colour swatches and a
    price checked as a number (a bare number gets ``currency`` before it and thousands separators;
    one with its own sign, ``₹ 2,499``, stays as written; not a number: shown as the catalog wrote
    it, marked, ``problem`` set); None when the row has no value."""
    key = ALIASES.get(name.split(".", 1)[-1], name.split(".", 1)[-1])
    value = attribute(row, name)
    if value is None:
        return None
    f = Fact(key, header(key, language), value)
    if key == "colour":
        f.swatches = swatches(value)
    elif key == "price":
        number = price_value(value)
        if number is None:
            f.problem = f"price {value[:40]!r} is not a number"
            f.value = f"{value} ({header('no_price', language)})"
        elif not re.search(r"[^\d.,\s]", value):  # a bare number: the job's currency before it
            f.value = f"{currency}{number:,.2f}".replace(".00", "")
    return f


def label_facts(row: dict, extra: list[str], language: str, currency: str = "") -> list[Fact]:
    """A label's facts in order: colour, material, size, care (attributes first, else parsed from
    the description and title), then the ``extra`` columns (e.g. ``attributes.gender``), then
    ``about``: the description's first sentence other than the care one."""
    text = description_text(row.get("description"))
    both = f"{row.get('title') or ''}. {text}"
    out: list[Fact] = []
    for key, parsed in (("colour", None), ("material", lambda: ", ".join(materials(both)) or None), ("size", lambda: dimensions(text)),
                        ("care", lambda: care(text))):
        f = fact(row, f"attributes.{key}", language, currency) or (fact(row, "attributes.color", language) if key == "colour" else None)
        if f is None and parsed is not None:
            v = parsed()
            f = Fact(key, header(key, language), v) if v else None
        if f:
            out.append(f)
    for name in extra:
        f = fact(row, name, language, currency)
        if f and f.key not in {x.key for x in out}:
            out.append(f)
    about = first_sentence(text, skip=next((f.value for f in out if f.key == "care"), None))
    if about:
        out.append(Fact("about", header("about", language), about))
    return out

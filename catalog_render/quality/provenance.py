"""Provenance metadata saying an image is AI-generated, written into PNG, JPEG and WebP files.

What is written (an XMP packet, Adobe XMP Specification Part 1, ISO 16684-1):

- ``Iptc4xmpExt:DigitalSourceType`` =
  ``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` — IPTC Photo Metadata
  Standard, property "Digital Source Type", value from the IPTC NewsCodes "Digital Source Type"
  vocabulary ("created by a model trained on sampled content"). Google Merchant Center requires it
  on AI-generated product images ("Requirements for AI-generated content").
- ``Iptc4xmpExt:AISystemUsed`` / ``Iptc4xmpExt:AISystemVersionUsed`` — IPTC Photo Metadata
  Standard 2025.1 "AI System Used" and "AI System Version Used": the generator family and the model
  id.
- ``xmp:CreatorTool`` and ``xmp:CreateDate`` (XMP basic schema).
- ``catalogrender:ModelId``, ``catalogrender:RenderKey``, ``catalogrender:ProductId``,
  ``catalogrender:RunId`` in the project namespace :data:`NAMESPACE`.

Where it goes, per format (Pillow encodes; the packet is the same in all three):

- JPEG: an APP1 segment ``http://ns.adobe.com/xap/1.0/`` (Pillow's ``xmp=`` save argument);
- WebP: the ``XMP `` chunk of the extended (VP8X) container (Pillow's ``xmp=`` save argument);
- PNG: an uncompressed ``iTXt`` chunk with keyword ``XML:com.adobe.xmp`` (XMP Specification
  Part 3, "PNG"), plus plain ``tEXt`` chunks ``catalog-render:model_id`` / ``render_key`` /
  ``digital_source_type`` for tools that read only PNG text.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime

from PIL import Image, PngImagePlugin

#: IPTC NewsCodes digital source type for media created by a model trained on sampled content.
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
#: This project's XMP namespace (a URN: the project has no web domain of its own).
NAMESPACE = "urn:catalog-render:xmp:1.0/"
PREFIX = "catalogrender"

NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    PREFIX: NAMESPACE,
}
for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)

#: PNG tEXt keywords written beside the XMP (PNG keywords are Latin-1, 1-79 bytes).
PNG_TEXT_KEYS = {
    "digital_source_type": "catalog-render:digital_source_type",
    "model_id": "catalog-render:model_id",
    "render_key": "catalog-render:render_key",
}


@dataclass(frozen=True)
class ProvenanceMetadata:
    """What one rendered image says about itself. ``model_id`` = the manifest's model identity,
    ``render_key`` = the manifest's idempotency key; the rest is optional."""

    model_id: str
    render_key: str
    family: str | None = None
    product_id: str | None = None
    run_id: str | None = None
    seed: int | None = None
    creator_tool: str = "catalog-render"
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    digital_source_type: str = TRAINED_ALGORITHMIC_MEDIA


def xmp_packet(meta: ProvenanceMetadata) -> bytes:
    """The XMP packet (UTF-8, with the ``<?xpacket?>`` wrapper) for ``meta``. Values are XML-escaped
    by ElementTree, so product ids and keys with ``<``, ``&`` or quotes are safe."""
    rdf = f"{{{NS['rdf']}}}"
    root = ET.Element(f"{{{NS['x']}}}xmpmeta")
    rdf_el = ET.SubElement(root, rdf + "RDF")
    desc = ET.SubElement(rdf_el, rdf + "Description", {rdf + "about": ""})
    created = meta.created if meta.created.tzinfo else meta.created.replace(tzinfo=UTC)
    props = [
        ("Iptc4xmpExt", "DigitalSourceType", meta.digital_source_type),
        ("Iptc4xmpExt", "AISystemUsed", f"catalog-render {meta.family}" if meta.family else "catalog-render"),
        ("Iptc4xmpExt", "AISystemVersionUsed", meta.model_id),
        ("xmp", "CreatorTool", meta.creator_tool),
        ("xmp", "CreateDate", created.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")),
        (PREFIX, "ModelId", meta.model_id),
        (PREFIX, "RenderKey", meta.render_key),
        (PREFIX, "ProductId", meta.product_id),
        (PREFIX, "RunId", meta.run_id),
        (PREFIX, "Seed", meta.seed),
    ]
    for prefix, name, value in props:
        if value is not None:
            ET.SubElement(desc, f"{{{NS[prefix]}}}{name}").text = str(value)
    body = ET.tostring(root, encoding="unicode")
    return ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n' + body + '\n<?xpacket end="w"?>').encode("utf-8")


def save_with_provenance(image: Image.Image, fmt: str, meta: ProvenanceMetadata, quality: int | None = None) -> bytes:
    """Encode ``image`` as ``fmt`` (PNG, JPEG or WEBP) with the provenance XMP embedded; returns the
    bytes. ``quality`` applies to JPEG/WebP (Pillow's default when None). Raises ValueError for any
    other format."""
    fmt = {"JPG": "JPEG"}.get(fmt.upper(), fmt.upper())
    packet = xmp_packet(meta)
    buf = io.BytesIO()
    if fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_itxt("XML:com.adobe.xmp", packet.decode("utf-8"), zip=False)
        info.add_text(PNG_TEXT_KEYS["digital_source_type"], meta.digital_source_type)
        info.add_text(PNG_TEXT_KEYS["model_id"], meta.model_id)
        info.add_text(PNG_TEXT_KEYS["render_key"], meta.render_key)
        image.save(buf, "PNG", pnginfo=info)
    elif fmt in ("JPEG", "WEBP"):
        kwargs = {"xmp": packet}
        if quality is not None:
            kwargs["quality"] = int(quality)
        image.save(buf, fmt, **kwargs)
    else:
        raise ValueError(f"provenance metadata is written to PNG, JPEG or WEBP, not {fmt!r}")
    return buf.getvalue()


def read_provenance(data: bytes) -> dict[str, str]:
    """The provenance properties of an encoded image, as ``{"DigitalSourceType": ..., "ModelId":
    ..., "RenderKey": ..., ...}`` (local names; empty dict when the file has no XMP). Reads the XMP
    packet Pillow finds (JPEG APP1, WebP ``XMP ``, PNG ``XML:com.adobe.xmp``) and parses it with
    ElementTree; elements and attributes of the namespaces above are both accepted."""
    with Image.open(io.BytesIO(data)) as im:
        raw = im.info.get("xmp") or im.info.get("XML:com.adobe.xmp")
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    start, end = text.find("<x:xmpmeta"), text.rfind("</x:xmpmeta>")
    if start < 0 or end < 0:
        return {}
    root = ET.fromstring(text[start:end + len("</x:xmpmeta>")])
    wanted = {NS["Iptc4xmpExt"], NS["xmp"], NAMESPACE}
    out: dict[str, str] = {}
    for desc in root.iter(f"{{{NS['rdf']}}}Description"):
        for key, value in desc.attrib.items():
            uri, _, local = key[1:].partition("}")
            if uri in wanted:
                out[local] = value
        for child in desc:
            uri, _, local = child.tag[1:].partition("}")
            if uri in wanted and child.text is not None:
                out[local] = child.text
    return out

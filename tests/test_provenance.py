"""Provenance XMP read back from PNG, JPEG and WebP files by an independent reader (libexiv2 through
pyexiv2), not by this project's parser or Pillow."""

import io
from datetime import UTC, datetime

import numpy as np
import pyexiv2  # the test extra installs it: libexiv2, independent of Pillow and of our parser
import pytest
from PIL import Image

from catalog_render.quality import presets, provenance

IPTC_AI = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture(scope="module", autouse=True)
def _register_namespace():
    # exiv2 reads properties of namespaces it has been told about; IPTC Extension and XMP basic it knows
    pyexiv2.registerNs(provenance.NAMESPACE, provenance.PREFIX)


def _meta(**kw):
    base = {"model_id": "3f2a9c0d1e4b5a6f", "render_key": "9" * 64, "family": "gan", "product_id": "SKU <42> & co",
                "run_id": "20261130T120000Z-abc123", "created": datetime(2026, 11, 30, 12, 0, tzinfo=UTC)}
    base.update(kw)
    return provenance.ProvenanceMetadata(**base)


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_exiv2_reads_the_ai_label_and_ids_from_every_format(fmt):
    data = provenance.save_with_provenance(_image(), fmt, _meta(), quality=90)
    with pyexiv2.ImageData(data) as img:
        xmp = img.read_xmp()
    assert xmp["Xmp.iptcExt.DigitalSourceType"] == IPTC_AI
    assert xmp["Xmp.iptcExt.AISystemUsed"] == "catalog-render gan"
    assert xmp["Xmp.iptcExt.AISystemVersionUsed"] == "3f2a9c0d1e4b5a6f"
    assert xmp["Xmp.xmp.CreatorTool"] == "catalog-render"
    assert xmp["Xmp.xmp.CreateDate"] == "2026-11-30T12:00:00Z"
    assert xmp["Xmp.catalogrender.ModelId"] == "3f2a9c0d1e4b5a6f"
    assert xmp["Xmp.catalogrender.RenderKey"] == "9" * 64
    assert xmp["Xmp.catalogrender.ProductId"] == "SKU <42> & co"  # escaped in XML, intact when read
    # the pixels are still a decodable image of the same size
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt and im.size == (64, 48)


def test_png_also_carries_plain_text_chunks():
    data = provenance.save_with_provenance(_image(), "PNG", _meta())
    with Image.open(io.BytesIO(data)) as im:
        text = im.text
    assert text["catalog-render:digital_source_type"] == IPTC_AI
    assert text["catalog-render:render_key"] == "9" * 64
    assert text["catalog-render:model_id"] == "3f2a9c0d1e4b5a6f"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_own_reader_agrees_with_exiv2(fmt):
    data = presets.export(_image(), fmt, metadata=_meta(family=None, product_id=None, run_id=None))
    ours = provenance.read_provenance(data)
    with pyexiv2.ImageData(data) as img:
        theirs = {k.rsplit(".", 1)[1]: v for k, v in img.read_xmp().items()}
    assert ours == theirs
    assert ours["AISystemUsed"] == "catalog-render" and "ProductId" not in ours


def test_no_metadata_without_provenance_and_bad_format():
    assert provenance.read_provenance(presets.export(_image(), "png")) == {}
    with pytest.raises(ValueError, match="PNG, JPEG or WEBP"):
        provenance.save_with_provenance(_image(), "GIF", _meta())

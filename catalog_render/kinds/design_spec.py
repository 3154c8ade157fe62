"""``[design]`` in the job spec: the variations ``--kind design`` makes per product.

Field-level rules are checked when the job is loaded (ConfigError naming ``design.<field>``);
rules that need the model (a value outside its vocabulary, a field it does not condition on, a
walk on a family without an explicit latent) are checked by the kind's ``plan`` before anything is
rendered, with the same kind of message (:mod:`catalog_render.kinds.design`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Most variations per product: the design sheet shows them beside the product's own render in a
#: grid of :data:`catalog_render.kinds.design_sheet.COLUMNS` columns, so 64 is 11 rows of tiles
#: (a sheet about 1,200 x 3,600 px at the default tile size); more is not a sheet a person reads.
MAX_VARIATIONS = 64
#: Variations per product when neither ``variations`` nor ``values`` says.
DEFAULT_VARIATIONS = 5


class DesignSpec(BaseModel):
    """``[design]``: the variations of each product.

    ``mode``: ``sweep`` renders the product with the latent held fixed (the product's own seed,
    the one ``--kind render`` uses) and one conditioning field (``sweep_field``: ``category`` or
    ``attributes.<name>``) set to each of ``values`` in turn; ``walk`` holds the product's
    conditioning fixed and moves the latent along the great circle (slerp) from the product's
    latent towards a second one, ``walk_span`` of the way (1.0: all of it) in ``variations`` equal
    steps. ``values`` empty: for ``category``, the categories nearest the product's own by cosine
    similarity of the model's learnt category embeddings; for another field, the model's
    vocabulary in its order (most frequent in training first), the product's own value left out.
    ``variations``: N per product, 1..:data:`MAX_VARIATIONS`; None = the number of ``values``
    given, else :data:`DEFAULT_VARIATIONS`. ``tile_px``: the height in pixels of each tile of the
    design sheet (the variation images themselves are the model's own size)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sweep", "walk"] = "sweep"
    variations: int | None = Field(None, ge=1, le=MAX_VARIATIONS)
    sweep_field: str = "attributes.color"
    values: tuple[str, ...] = ()
    walk_span: float = Field(1.0, gt=0, le=1)
    tile_px: int = Field(192, ge=32, le=1024)

    @field_validator("sweep_field")
    @classmethod
    def _field_name(cls, v: str) -> str:
        if v != "category" and not (v.startswith("attributes.") and len(v) > len("attributes.")):
            raise ValueError(f"{v!r} is not a conditioning field (category or attributes.<name>)")
        return v

    @field_validator("values")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) > MAX_VARIATIONS:
            raise ValueError(f"{len(v)} values: at most {MAX_VARIATIONS} variations per product")
        seen = set()
        for value in v:
            if not value.strip():
                raise ValueError("an empty value")
            if value in seen:
                raise ValueError(f"{value!r} is listed twice")
            seen.add(value)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "DesignSpec":
        if self.values and self.mode == "walk":
            raise ValueError("values: a walk holds the conditioning fixed; values apply to mode = \"sweep\" only")
        if self.values and self.variations is not None and self.variations != len(self.values):
            raise ValueError(f"variations: {self.variations} asked but values lists {len(self.values)}; give one of them, or both equal")
        return self

    @property
    def count(self) -> int:
        """N: the variations made per product."""
        return self.variations or len(self.values) or DEFAULT_VARIATIONS

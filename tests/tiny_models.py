"""Tiny, randomly initialised models for tests, built fully offline (no Hub download).

Not a test module: tests import the builders from here.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

# Nothing in this module may reach the network; set before diffusers/transformers are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

#: Token-sequence length of the tiny tokenizer and text encoder (CLIP uses 77).
TINY_MAX_LENGTH = 16


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2 reversible byte -> printable unicode character map (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_clip_vocab(directory: str | Path) -> dict[str, int]:
    """Write a minimal CLIP byte-level BPE ``vocab.json`` + ``merges.txt`` into ``directory``.

    Vocabulary (514 ids): the 256 byte characters, the same 256 with the ``</w>`` end-of-word
    suffix, then ``<|startoftext|>`` and ``<|endoftext|>``. ``merges.txt`` holds only the
    ``#version: 0.2`` header, so every word tokenizes into single bytes. Returns the vocabulary.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return vocab


def make_tiny_sd_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Build a tiny random-weight StableDiffusionPipeline offline and save it under ``path``.

    Layout is the standard diffusers one (``model_index.json`` + unet/, vae/, text_encoder/,
    tokenizer/, scheduler/), weights as safetensors. UNet latents are 4 x 8 x 8, the VAE upsamples
    by 2, so native images are 16 x 16 RGB; a 2-step generate runs in a fraction of a second on CPU.
    Deterministic for a given ``seed`` (torch is seeded before every module is built).

    Returns the pipeline directory as a Path.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    path = Path(path)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    with tempfile.TemporaryDirectory() as tok_dir:
        vocab = write_tiny_clip_vocab(tok_dir)
        tokenizer = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=TINY_MAX_LENGTH, local_files_only=True)
    torch.manual_seed(seed + 2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=TINY_MAX_LENGTH,
            projection_dim=16,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    return path

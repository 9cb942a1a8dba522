"""The miniature's text encoder: SD1's, a CLIP ViT-L/14 text transformer, with seeded random weights.

The webui loads the miniature with SD1's text encoder class (transformers' CLIPTextModel), so the
checkpoint must carry a text transformer of exactly that shape. Trained, it would be 123 M
parameters (246 MB in fp16) that the miniature does not need: the UNet learns to read whatever
embeddings a frozen random encoder gives. So the weights are never stored. They are regenerated
here, each tensor from a torch.Generator seeded by its name, and the embeddings the UNet was trained
on are stored beside the UNet so that a mismatch is refused (model.py) instead of sampled from.

This is a plain-torch forward of CLIP's text model (pre-norm transformer, causal mask, quick GELU,
the last hidden state after the final layer norm: what SD1 feeds the UNet), under the key names of
transformers' CLIPTextModel, so that the webui's own class computes the same embeddings from the
exported weights.

Tokens: the miniature's prompts use four words, each a single token of CLIP's BPE vocabulary; their
ids are listed here instead of shipping the 49,408-entry vocabulary. Padding follows SD1 in the
webui: BOS, the words, then EOS up to 77 tokens.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

WIDTH, LAYERS, HEADS, MLP_WIDTH = 768, 12, 12, 3072
VOCAB, CONTEXT = 49408, 77
BOS, EOS = 49406, 49407
# The ids CLIP's tokenizer gives these words (openai/clip-vit-large-patch14; "circle" -> 7117).
WORD_IDS = {"a": 320, "circle": 7117, "square": 3999, "triangle": 14615}
SEED_PREFIX = "fabric-miniature-clip-text/"


def tokenize(prompt: str) -> list[int]:
    """77 token ids of a prompt made of the miniature's words (case and extra spaces ignored)."""
    words = prompt.lower().replace(",", " ").split()
    unknown = [w for w in words if w not in WORD_IDS]
    if unknown:
        raise ValueError(
            f"the miniature knows the words {', '.join(WORD_IDS)}; not {', '.join(map(repr, unknown))}")
    ids = [BOS] + [WORD_IDS[w] for w in words] + [EOS]
    return ids + [EOS] * (CONTEXT - len(ids))


def _init_std(name: str) -> float | None:
    """CLIP's initialisation scale for a tensor (None: a LayerNorm or bias, set to 1 or 0)."""
    if name.endswith("bias") or "layer_norm" in name:
        return None
    if "embedding" in name:
        return 0.02
    attention = WIDTH**-0.5 * (2 * LAYERS) ** -0.5
    if "out_proj" in name:
        return WIDTH**-0.5
    if "fc1" in name:
        return (2 * WIDTH) ** -0.5
    return attention  # q, k, v projections and fc2


def seeded_tensor(name: str, shape: torch.Size) -> torch.Tensor:
    std = _init_std(name)
    if std is None:
        ones = name.endswith("weight")  # a LayerNorm's gain
        return torch.ones(shape) if ones else torch.zeros(shape)
    seed = int.from_bytes(hashlib.sha256((SEED_PREFIX + name).encode()).digest()[:8], "little") >> 1
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = nn.Module()
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            setattr(self.self_attn, proj, nn.Linear(WIDTH, WIDTH))
        self.layer_norm1 = nn.LayerNorm(WIDTH)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(WIDTH, MLP_WIDTH)
        self.mlp.fc2 = nn.Linear(MLP_WIDTH, WIDTH)
        self.layer_norm2 = nn.LayerNorm(WIDTH)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.self_attn
        h = self.layer_norm1(x)
        b, n, _ = h.shape

        def heads(t):
            return t.view(b, n, HEADS, WIDTH // HEADS).transpose(1, 2)

        q, k, v = heads(a.q_proj(h)), heads(a.k_proj(h)), heads(a.v_proj(h))
        h = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + a.out_proj(h.transpose(1, 2).reshape(b, n, WIDTH))
        h = self.mlp.fc1(self.layer_norm2(x))
        return x + self.mlp.fc2(h * torch.sigmoid(1.702 * h))  # quick GELU


class TextEncoder(nn.Module):
    """SD1's text encoder with seeded weights; `state_dict()` keys are CLIPTextModel's."""

    def __init__(self):
        super().__init__()
        self.text_model = nn.Module()
        emb = self.text_model.embeddings = nn.Module()
        emb.token_embedding = nn.Embedding(VOCAB, WIDTH)
        emb.position_embedding = nn.Embedding(CONTEXT, WIDTH)
        self.text_model.encoder = nn.Module()
        self.text_model.encoder.layers = nn.ModuleList(_Layer() for _ in range(LAYERS))
        self.text_model.final_layer_norm = nn.LayerNorm(WIDTH)
        with torch.no_grad():
            for name, param in self.named_parameters():
                param.copy_(seeded_tensor(name, param.shape))
        self.requires_grad_(False)
        self.eval()

    def webui_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights as SD1 checkpoints carry them (transformers 4.30 also keeps position_ids)."""
        state = {f"cond_stage_model.transformer.{k}": v for k, v in self.state_dict().items()}
        state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(CONTEXT)[None]
        return state

    @torch.no_grad()
    def forward(self, prompts: list[str]) -> torch.Tensor:
        """[len(prompts), 77, 768]: the last hidden state after the final layer norm."""
        ids = torch.tensor([tokenize(p) for p in prompts])
        emb = self.text_model.embeddings
        x = emb.token_embedding(ids) + emb.position_embedding.weight[None]
        mask = torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1)
        for layer in self.text_model.encoder.layers:
            x = layer(x, mask)
        return self.text_model.final_layer_norm(x)

"""Rotary position embeddings over (frame, height, width) for the Krea 2 DiT.

`token_positions` lays out coordinates for [text, image] sequences, `Rope` turns them into
cos/sin tables, `apply_rope` rotates queries and keys. Kinds: 3D axial (text at index 0),
partial, Golden Gate, MRoPE, and normalized (resolution-independent) RoPE.
"""

from k2_dit.rope._frequencies import golden_gate_directions, rope_frequencies
from k2_dit.rope._positions import extra_positions, token_positions
from k2_dit.rope._rope import Rope
from k2_dit.rope._tables import RopeTables, apply_rope

__all__ = [
    "Rope",
    "RopeTables",
    "apply_rope",
    "extra_positions",
    "golden_gate_directions",
    "rope_frequencies",
    "token_positions",
]

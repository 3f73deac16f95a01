"""Frozen text encoder that returns the hidden states of every layer, stacked per token."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

EncoderKind = Literal["auto", "qwen3_vl", "t5", "causal_lm"]

_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "spiece.model", "tokenizer.model")
_HINTS = {
    "qwen3_vl": "download Qwen/Qwen3-VL-8B-Instruct to this directory "
    "(e.g. `hf download Qwen/Qwen3-VL-8B-Instruct --local-dir {path}`)",
    "t5": "download google/t5-v1_1-xxl to this directory "
    "(e.g. `hf download google/t5-v1_1-xxl --local-dir {path}`)",
    "causal_lm": "put a transformers checkpoint (config.json, tokenizer files, *.safetensors) "
    "in this directory",
}
_T5_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


class TextEncoderNotFoundError(FileNotFoundError):
    """A local text-encoder directory is missing or lacks config, tokenizer or weights."""


class TextEncoder:
    """Frozen transformers encoder or decoder that returns stacked hidden states of all layers.

    The model is put in eval mode with `requires_grad_(False)` and every call runs under
    `torch.no_grad()`. Prompts are right-padded so a causal model's real tokens never attend to
    padding and keep positions 0..n-1. Features at padded positions are set to exactly 0.

    Args:
        model: a transformers model whose forward takes `input_ids`, `attention_mask` and
            `output_hidden_states` (e.g. `Qwen3VLTextModel`, `T5EncoderModel`, `Qwen3Model`).
        tokenizer: the matching transformers tokenizer.
        name: optional identity used by feature caches; None derives one from the config,
            tokenizer and a sample of the weights (see `fingerprint`).

    References:
        Krea 2 report, Architecture / Text encoder (T5-XXL baseline, Qwen3-VL final);
        UniFusion (Li, Brack et al., arXiv 2510.12789): features of every VLM layer.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, *, name: str | None = None) -> None:
        if getattr(tokenizer, "pad_token_id", None) is None:
            eos = getattr(tokenizer, "eos_token", None)
            if eos is None:
                raise ValueError(
                    "the tokenizer has neither a pad token nor an eos token: set "
                    "tokenizer.pad_token before wrapping it in TextEncoder"
                )
            # Decoder-only tokenizers often ship without a pad token; padded positions are
            # masked and zeroed, so which id fills them does not matter.
            tokenizer.pad_token = eos
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self._name = name
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        kind: EncoderKind = "auto",
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
    ) -> TextEncoder:
        """Load a text encoder and its tokenizer from a local directory only.

        Args:
            path: directory with `config.json`, tokenizer files and weights.
            kind: `qwen3_vl` loads only the language model of a Qwen3-VL checkpoint (the vision
                tower's weights are never read); `t5` loads `T5EncoderModel` (mT5/umT5 alike);
                `causal_lm` loads the base model through `AutoModel`; `auto` picks from the
                config's `model_type`.
            dtype: parameter dtype.
            device: where the model lives.

        Returns:
            The frozen encoder.
        """
        import transformers

        root = Path(path).expanduser()
        _check_local_dir(root, kind)
        config = transformers.AutoConfig.from_pretrained(root, local_files_only=True)
        resolved = _resolve_kind(kind, config.model_type)
        if resolved == "qwen3_vl":
            model = _load_qwen3_vl_language_model(root, config, dtype)
        elif resolved == "t5":
            model_cls = getattr(transformers, _T5_ENCODERS.get(config.model_type, "T5EncoderModel"))
            model = model_cls.from_pretrained(root, local_files_only=True, dtype=dtype)
        else:
            model = transformers.AutoModel.from_pretrained(root, local_files_only=True, dtype=dtype)
        tokenizer = transformers.AutoTokenizer.from_pretrained(root, local_files_only=True)
        return cls(model.to(device), tokenizer)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write the model and tokenizer so `TextEncoder.from_pretrained(path)` restores them."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    @property
    def num_hidden_states(self) -> int:
        """Hidden states per token: embeddings plus one per layer (set `text.num_layers` to it)."""
        config = self.model.config
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", None)
        if layers is None:
            raise AttributeError(f"{type(config).__name__} does not say how many layers it has")
        return int(layers) + 1

    @property
    def hidden_size(self) -> int:
        """Width of each hidden state (set `text.encoder_dim` to it)."""
        config = self.model.config
        return int(getattr(config, "hidden_size", None) or config.d_model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def fingerprint(self) -> str:
        """Identity of the encoder for caches: the given name, or a hash of the config, the
        tokenizer, the dtype and a few values of every parameter (cheap even at 8B)."""
        if self._name is not None:
            return self._name
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self.model, self.tokenizer)
        return self._fingerprint

    def encode(
        self, prompts: list[str], *, max_length: int
    ) -> tuple[Float[Tensor, "b l k e"], Bool[Tensor, "b l"]]:
        """Encode prompts into the hidden states of every layer.

        Args:
            prompts: the texts; an empty string gives an all-False mask row.
            max_length: longest token sequence kept (longer prompts are truncated).

        Returns:
            hidden: `[b, l, k, e]`, `l` the longest kept prompt (at least 1), `k` =
                `num_hidden_states`; zero at padded positions.
            mask: `[b, l]`, True on real tokens.
        """
        if max_length < 1:
            raise ValueError(f"max_length={max_length} must be >= 1")
        if not prompts:
            raise ValueError("prompts is empty: pass at least one prompt")
        batch = self.tokenizer(
            list(prompts),
            padding="longest",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            padding_side="right",
        )
        attention = batch["attention_mask"].bool()
        # Special tokens (T5's </s>) of an empty prompt are not a prompt.
        is_empty = torch.tensor([p == "" for p in prompts])
        mask = attention & ~is_empty[:, None]
        length = max(1, int(attention.sum(dim=1).max()))
        input_ids = batch["input_ids"][:, :length]
        if input_ids.shape[1] < length:
            pad = torch.full(
                (len(prompts), length - input_ids.shape[1]), self.tokenizer.pad_token_id
            )
            input_ids = torch.cat([input_ids, pad], dim=1)
            attention = torch.cat([attention, torch.zeros_like(pad, dtype=torch.bool)], dim=1)
            mask = torch.cat([mask, torch.zeros_like(pad, dtype=torch.bool)], dim=1)
        mask = mask[:, :length]
        device = self.device
        with torch.no_grad():
            out = self.model(
                input_ids=input_ids.to(device),
                attention_mask=attention[:, :length].long().to(device),
                output_hidden_states=True,
            )
        hidden = torch.stack(tuple(out.hidden_states), dim=2)
        mask = mask.to(device)
        # where, not multiply: a fully padded row may hold NaN with some attention backends.
        hidden = torch.where(mask[:, :, None, None], hidden, torch.zeros((), dtype=hidden.dtype))
        return hidden, mask


def _resolve_kind(kind: EncoderKind, model_type: str) -> str:
    if kind == "auto":
        if model_type == "qwen3_vl":
            return "qwen3_vl"
        return "t5" if model_type in _T5_ENCODERS else "causal_lm"
    if kind == "qwen3_vl" and model_type != "qwen3_vl":
        raise ValueError(
            f"kind='qwen3_vl' but the checkpoint's model_type is {model_type!r}: "
            "use kind='auto' or point to a Qwen3-VL checkpoint"
        )
    if kind == "t5" and model_type not in _T5_ENCODERS:
        raise ValueError(
            f"kind='t5' but the checkpoint's model_type is {model_type!r}: "
            f"use kind='auto' or a checkpoint of type {sorted(_T5_ENCODERS)}"
        )
    return kind


def _check_local_dir(root: Path, kind: str) -> None:
    hint = _HINTS.get(kind, _HINTS["qwen3_vl"] if kind == "auto" else _HINTS["causal_lm"])
    hint = hint.format(path=root)
    if not root.is_dir():
        raise TextEncoderNotFoundError(f"no text-encoder directory at {root}: {hint}")
    missing = []
    if not (root / "config.json").is_file():
        missing.append("config.json")
    if not any(any(root.glob(p)) for p in _WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors)")
    if not any((root / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer files (tokenizer.json or tokenizer_config.json)")
    if missing:
        raise TextEncoderNotFoundError(
            f"text-encoder directory {root} lacks {', '.join(missing)}: {hint}"
        )


@functools.cache
def _qwen3_vl_language_model_class() -> type:
    from transformers import Qwen3VLTextModel

    class Qwen3VLLanguageModel(Qwen3VLTextModel):
        """`Qwen3VLTextModel` that quietly skips the vision tower and LM head of a full
        Qwen3-VL checkpoint (those tensors are never materialised)."""

        _keys_to_ignore_on_load_unexpected = (r"^model\.visual\.", r"^lm_head\.")

    return Qwen3VLLanguageModel


def _load_qwen3_vl_language_model(root: Path, config: Any, dtype: torch.dtype) -> nn.Module:
    model_cls = _qwen3_vl_language_model_class()
    model, info = model_cls.from_pretrained(
        root,
        config=config.text_config,
        local_files_only=True,
        dtype=dtype,
        # Full checkpoints name the language model `model.language_model.*`.
        key_mapping={r"^model\.language_model\.": ""},
        output_loading_info=True,
    )
    if info["missing_keys"]:
        some = sorted(info["missing_keys"])[:5]
        raise TextEncoderNotFoundError(
            f"{root} holds a Qwen3-VL config but its weights lack the language model "
            f"(missing e.g. {some}): {_HINTS['qwen3_vl'].format(path=root)}"
        )
    return model


def _fingerprint(model: nn.Module, tokenizer: Any) -> str:
    digest = hashlib.sha256()
    config = {
        k: v
        for k, v in model.config.to_dict().items()
        if not k.startswith("_")
        and k not in ("architectures", "dtype", "torch_dtype")
        and k != "transformers_version"
    }
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        # Calling the tokenizer rewrites its padding/truncation state; that is not identity.
        spec.pop("padding", None)
        spec.pop("truncation", None)
    else:
        spec = tokenizer.get_vocab()
    digest.update(json.dumps(spec, sort_keys=True).encode())
    for name, param in sorted(model.state_dict().items()):
        flat = param.detach().reshape(-1)
        sample = torch.cat([flat[:8], flat[-8:]]).to("cpu", torch.float64)
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}".encode())
        digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:32]

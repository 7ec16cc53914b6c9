"""Task 7: a transformers KV cache whose update is your ``update_kv_cache`` kernel (provided).

transformers 5 keeps the KV cache in a ``Cache`` object holding one
``CacheLayerMixin`` per layer; each attention layer calls
``cache.update(key, value, layer_idx)`` with this call's keys and values
(``[B, heads, S, head_dim]``) and attends over what it returns. The library's
``StaticCache`` preallocates ``[B, heads, max_len, head_dim]`` buffers and
returns them whole, relying on an attention mask to hide the unwritten rows.

:class:`KernelKVCache` is the same idea in the kernels' layout:

* each layer preallocates ``k_cache, v_cache`` of shape ``[B, max_seq_len, H]``
  (``H = heads * head_dim``), exactly what task 5's kernels take;
* ``update`` writes the new rows with your ``update_kv_cache`` kernel, handing
  it ``key.transpose(1, 2)`` merged to ``[B, S, H]``: a strided view of GPT-2's
  ``c_attn`` output, no copy (the kernel takes row strides);
* it returns the first ``L = past + S`` rows as ``[B, heads, L, head_dim]``
  *views* of the buffers, so the registered attention function
  (``task7.attention``) can merge them back to a ``[B, L, H]`` view and run the
  decode kernel on the cache in place, with ``seq_len = L``.

Where the library's API and the kernels differ (documented, not hidden):

* ``update`` must return tensors in the library's ``[B, heads, L, head_dim]``
  layout; the decode kernel's "cache plus valid length" arrives as a view of
  exactly the valid rows rather than the whole buffer and an integer. The
  kernel reads the same memory either way (the view's strides are the buffer's).
* Unlike ``StaticCache`` (which returns all ``max_len`` rows and a mask), we
  return only the valid rows and report ``get_mask_sizes`` like the dynamic cache:
  the kernels take no mask, and a custom attention name gets none anyway.
* Only what greedy and sampled generation need is supported: beam search and
  other batch reorderings (``reorder_cache``, ``batch_select_indices``, ...)
  raise; ``crop`` only moves the valid length back.
* ``is_compileable`` is False: the kernels are opaque to ``torch.compile``, so
  ``generate`` never tries to compile the decode step.
"""
from __future__ import annotations

import torch
import transformers

try:
    from transformers.cache_utils import Cache, CacheLayerMixin
except ImportError as exc:  # transformers 4.x has no per-layer cache classes
    raise ImportError(
        f"task 7 needs transformers 5 (checked with 5.17 and 5.23); this is transformers {transformers.__version__}: "
        "pip install -U 'transformers>=5.17'"
    ) from exc

from .attention import Kernels


class KernelCacheLayer(CacheLayerMixin):
    """One layer's preallocated ``[B, max_seq_len, H]`` key and value buffers, written by the kernel."""

    is_compileable = False
    is_sliding = False
    is_croppable = True

    def __init__(self, max_cache_len: int, kernels: Kernels, fill: float | None = None):
        super().__init__()
        self.max_cache_len = max_cache_len
        self.kernels = kernels
        self.fill = fill  # e.g. NaN in tests: a read past the valid rows poisons the output
        self.length = 0
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, nh, _, d = key_states.shape
        if value_states.shape[-1] != d:
            raise ValueError("keys and values of different head dims are not supported")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch_size, self.num_heads, self.head_dim = b, nh, d
        shape = (b, self.max_cache_len, nh * d)
        if self.fill is None:
            self.k_cache = torch.empty(shape, dtype=self.dtype, device=self.device)
            self.v_cache = torch.empty(shape, dtype=self.dtype, device=self.device)
        else:
            self.k_cache = torch.full(shape, self.fill, dtype=self.dtype, device=self.device)
            self.v_cache = torch.full(shape, self.fill, dtype=self.dtype, device=self.device)
        # The library's view of the same memory ([B, heads, max_len, head_dim], like StaticLayer.keys).
        self.keys = self._heads(self.k_cache, self.max_cache_len)
        self.values = self._heads(self.v_cache, self.max_cache_len)
        self.is_initialized = True

    def _heads(self, buf: torch.Tensor, rows: int) -> torch.Tensor:
        """The first ``rows`` rows of a ``[B, max_len, H]`` buffer as a ``[B, heads, rows, head_dim]`` view."""
        b = buf.shape[0]
        return buf[:, :rows].view(b, rows, self.num_heads, self.head_dim).transpose(1, 2)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        b, nh, s, d = key_states.shape
        if (b, nh, d) != (self.batch_size, self.num_heads, self.head_dim):
            raise ValueError(
                f"the cache was allocated for [B={self.batch_size}, heads={self.num_heads}, head_dim={self.head_dim}] "
                f"but got keys {tuple(key_states.shape)}: make a new cache for a new batch"
            )
        if self.length + s > self.max_cache_len:
            raise ValueError(
                f"the KV cache holds {self.max_cache_len} positions: {self.length} are used and {s} more do not fit "
                "(make the cache longer, or generate fewer tokens)"
            )
        # [B, heads, S, d] -> [B, S, H]: a view of GPT-2's projection output when the memory allows.
        k = key_states.transpose(1, 2).reshape(b, s, nh * d)
        v = value_states.transpose(1, 2).reshape(b, s, nh * d)
        if k.dtype != self.dtype:
            k, v = k.to(self.dtype), v.to(self.dtype)
        self.kernels.calls["update_kv_cache"] += 1
        self.kernels.update_kv_cache(self.k_cache, self.v_cache, k, v, self.length)
        self.length += s
        return self._heads(self.k_cache, self.length), self._heads(self.v_cache, self.length)

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.max_cache_len

    def reset(self) -> None:
        self.length = 0
        if self.is_initialized and self.fill is not None:
            self.k_cache.fill_(self.fill)
            self.v_cache.fill_(self.fill)

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length + tokens_to_remove)

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError(
            "KernelKVCache supports greedy and sampled generation only (no beam search or batch reordering)"
        )

    reorder_cache = batch_repeat_interleave = batch_select_indices = offload = prefetch = _unsupported


class KernelKVCache(Cache):
    """A ``Cache`` of :class:`KernelCacheLayer`, one per attention layer of ``config``.

    Pass it to ``model.generate(..., cache=cache)`` (``past_key_values=`` before transformers 5.2x) or to ``model(...)``;
    it is sized for ``max_cache_len`` positions (prompt plus new tokens) and
    allocated on the first update, for that call's batch size, dtype and device.
    """

    def __init__(self, config, max_cache_len: int, kernels: Kernels, fill: float | None = None):
        text_config = config.get_text_config(decoder=True)
        n_layers = text_config.num_hidden_layers
        max_positions = getattr(text_config, "n_positions", None) or getattr(text_config, "max_position_embeddings", None)
        if max_positions is not None and max_cache_len > max_positions:
            raise ValueError(
                f"a cache of {max_cache_len} positions is longer than the model's context of {max_positions} "
                "(GPT-2 has learned position embeddings for those only)"
            )
        super().__init__(layers=[KernelCacheLayer(max_cache_len, kernels, fill) for _ in range(n_layers)])
        self.kernels = kernels
        self.capacity = max_cache_len  # (not `max_cache_len`: a read-only property of Cache in some versions)

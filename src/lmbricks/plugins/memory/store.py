"""One layer's InfLLM memory: sinks, blocks with representative keys, a local window; and its attention.

Keys are stored *before* RoPE, so every chunk can rotate them at the positions InfLLM assigns (see
:class:`lmbricks.plugins.memory.config.InfLLMConfig`). Everything lives where the model's tensors
live (CPU RAM for CPU runs) in the model's dtype; scores are computed in fp32. Batch size 1.

Per chunk of ``c`` new tokens (queries ``q`` (nh, c, hd), keys/values (nkv, c, hd)):

1. retrieve: score each block by ``sum over heads and queries of q . rep`` (rep: the mean of its
   representative keys), keep the ``top_k`` best;
2. attend, in one softmax (``F.scaled_dot_product_attention``), to the local window + the chunk
   (causal) and to the *global* set: sinks + retrieved blocks + the tokens that left the window but
   do not fill a block yet;
3. credit each local token with the dot products of the later queries with its key (InfLLM's
   representative score), summed over its window;
4. slide: tokens beyond ``window`` leave the local window to the sinks (the first ``sinks``
   positions) or to the pending run, which becomes a block every ``block_size`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from lmbricks.nn.model import apply_rope
from lmbricks.plugins.memory.config import InfLLMConfig

#: positions (n,) -> RoPE tables cos, sin (n, hd) in fp32.
Rope = Callable[[Tensor], tuple[Tensor, Tensor]]


def _empty(n_kv: int, hd: int, like: Tensor) -> Tensor:
    return like.new_zeros(n_kv, 0, hd)


def attention_dtype(q: Tensor) -> torch.dtype:
    """The dtype of a prefill chunk's fused attention: fp32 on a CPU, the model's dtype elsewhere.

    On the CPUs measured here (AVX512-BF16, no AMX) PyTorch's fused CPU attention is faster in fp32
    than in bf16, and the chunk's rotated queries and local keys are fp32 already (docs/plugins.md).
    """
    return torch.float32 if q.device.type == "cpu" else q.dtype


def block_scores(q: Tensor, reps: Tensor) -> Tensor:
    """How well each block answers a chunk: q (nh, c, hd), reps (nkv, nb, hd) -> (nb,) fp32.

    Query heads are grouped onto their key/value head (GQA); the score sums over heads and queries.
    """
    nh, n_kv = q.shape[0], reps.shape[0]
    qs = q.float().view(n_kv, nh // n_kv, -1, q.shape[-1]).sum(dim=(1, 2))  # (nkv, hd)
    return torch.einsum("kd,knd->n", qs, reps.float())


def representative_mean(keys: Tensor, scores: Tensor, r: int) -> Tensor:
    """The mean key of the ``r`` most attended tokens, per kv head: (nkv, n, hd), (nkv, n) -> (nkv, hd)."""
    idx = scores.topk(r, dim=1).indices  # (nkv, r)
    return keys.gather(1, idx[..., None].expand(-1, -1, keys.shape[-1])).float().mean(dim=1)


class LayerMemory:
    """The past of one attention layer, and attention of new chunks over it.

    Args:
        cfg: InfLLM settings.
        n_head, n_kv, head_dim: the layer's query heads, key/value heads and head size.
        rope: the model's rotary tables for given positions.
    """

    def __init__(self, cfg: InfLLMConfig, n_head: int, n_kv: int, head_dim: int, rope: Rope) -> None:
        self.cfg, self.n_head, self.n_kv, self.hd, self.rope = cfg, n_head, n_kv, head_dim, rope
        self.seen = 0  # tokens processed so far
        self.parts: dict[str, Tensor] = {}  # local_k/v/pos/score, sink_k/v/pos, pend_k/v/pos/score
        self.blocks: list[tuple[Tensor, Tensor, Tensor]] = []  # (k (nkv, bs, hd), v, pos (bs,))
        self.reps: Tensor | None = None  # (nkv, nb, hd) fp32

    def _init(self, k: Tensor) -> None:
        e = _empty(self.n_kv, self.hd, k)
        pos = torch.zeros(0, dtype=torch.long, device=k.device)
        score = torch.zeros(self.n_kv, 0, device=k.device)
        for name in ("local", "sink", "pend"):
            self.parts |= {f"{name}_k": e, f"{name}_v": e, f"{name}_pos": pos, f"{name}_score": score}
        self.parts["local_rk"] = e.float()  # the local keys rotated at their absolute positions, fp32

    def _retrieved(self, q_glob: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Global keys, values (nkv, G, hd) and positions (G,): sinks, the top-k blocks, pending."""
        p = self.parts
        ks, vs, ps = [p["sink_k"]], [p["sink_v"]], [p["sink_pos"]]
        if self.reps is not None and self.cfg.top_k > 0:
            k = min(self.cfg.top_k, len(self.blocks))
            chosen = block_scores(q_glob, self.reps).topk(k).indices.sort().values
            for i in chosen.tolist():
                bk, bv, bp = self.blocks[i]
                ks, vs, ps = [*ks, bk], [*vs, bv], [*ps, bp]
        ks, vs, ps = [*ks, p["pend_k"]], [*vs, p["pend_v"]], [*ps, p["pend_pos"]]
        return torch.cat(ks, dim=1), torch.cat(vs, dim=1), torch.cat(ps)

    def _rotate(self, x: Tensor, pos: Tensor) -> Tensor:
        cos, sin = self.rope(pos)
        return apply_rope(x.float(), cos, sin)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of a chunk over the memory, then the chunk joins it.

        Local keys are rotated once, at their absolute positions, when they arrive (RoPE scores
        depend only on distances, so this equals InfLLM's window-relative positions). Under
        ``positions="infllm"`` the memory sits ``window`` tokens before the chunk's first query:
        exactly InfLLM's distance when decoding (c = 1), where the query is rotated instead of the
        memory keys.

        Args:
            q: queries before RoPE, (nh, c, hd).
            k, v: the chunk's keys before RoPE and values, (nkv, c, hd).

        Returns:
            (nh, c, hd) attention outputs in ``q``'s dtype.
        """
        if not self.parts:
            self._init(k)
        p, c, window = self.parts, q.shape[1], self.cfg.window
        pos = torch.arange(self.seen, self.seen + c, device=q.device)
        q_abs, before = self._rotate(q, pos), p["local_pos"].shape[0]  # (nh, c, hd) fp32
        lk, lv = torch.cat([p["local_k"], k], dim=1), torch.cat([p["local_v"], v], dim=1)  # (nkv, L + c, hd)
        lrk, lpos = torch.cat([p["local_rk"], self._rotate(k, pos)], dim=1), torch.cat([p["local_pos"], pos])
        exact = self.cfg.positions == "exact"
        q_mem = self._rotate(q, pos - self.seen + window)  # the queries as seen from memory at position 0
        gk, gv, gpos = self._retrieved(q_mem)
        if c == 1 and not exact:
            y = self._glance(torch.cat([q_abs, q_mem], dim=-1), lrk, lv, gk, gv).to(q.dtype)
        else:
            work = attention_dtype(q)
            k_glob = self._rotate(gk, gpos if exact else torch.full_like(gpos, self.seen - window))
            keys = torch.cat([k_glob, lrk], dim=1).to(work)  # (nkv, G + L + c, hd)
            mask = keys.new_zeros(c, keys.shape[1])  # (c, G + L + c) additive: causal over the chunk only
            mask[:, gk.shape[1] + before :].masked_fill_(lpos[None, before:] > pos[:, None], float("-inf"))
            values = torch.cat([gv, lv], dim=1).to(work)[None]
            y = F.scaled_dot_product_attention(
                q_abs.to(work)[None], keys[None], values, attn_mask=mask, enable_gqa=True
            )[0].to(q.dtype)
        lscore = torch.cat([p["local_score"], p["local_score"].new_zeros(self.n_kv, c)], dim=1)
        self._slide(lk, lv, lrk, lpos, lscore + self._credit(q_abs, lrk, before))
        self.seen += c
        return y

    def _glance(self, qq: Tensor, lrk: Tensor, lv: Tensor, gk: Tensor, gv: Tensor) -> Tensor:
        """One decoding query, explicitly in fp32: qq (nh, 1, 2 hd) = [query at its position | query
        at ``window``] against the rotated local keys and the raw memory keys -> (nh, 1, hd)."""
        g, hd = self.n_head // self.n_kv, self.hd
        qg = qq.view(self.n_kv, g, 2 * hd)  # (nkv, g, 2 hd): a kv head's query heads together
        scores = torch.cat([qg[..., :hd] @ lrk.transpose(1, 2), qg[..., hd:] @ gk.float().transpose(1, 2)], dim=-1)
        probs = (scores / hd**0.5).softmax(dim=-1)  # (nkv, g, L + G)
        y = probs @ torch.cat([lv, gv], dim=1).float()  # (nkv, g, hd)
        return y.view(self.n_head, 1, hd)

    def _credit(self, q_rot: Tensor, k_loc: Tensor, before: int) -> Tensor:
        """InfLLM's representative score: the dot products each local token gets from later queries.

        q_rot (nh, c, hd) and k_loc (nkv, L + c, hd) rotated alike; returns (nkv, L + c) fp32. The sums
        run over the chunk's queries without forming the (c, L) score matrix: tokens before the chunk
        get every query's dot product, chunk token m those of the queries after it.
        """
        c = q_rot.shape[1]
        qs = q_rot.view(self.n_kv, -1, c, self.hd).sum(dim=1)  # (nkv, c, hd): a kv head's query heads summed
        later = qs.flip(1).cumsum(1).flip(1) - qs  # (nkv, c, hd): sum over queries j > m
        old = torch.einsum("kd,knd->kn", qs.sum(dim=1), k_loc[:, :before])
        return torch.cat([old, (later * k_loc[:, before:]).sum(dim=-1)], dim=1)

    def _slide(self, lk: Tensor, lv: Tensor, lrk: Tensor, lpos: Tensor, lscore: Tensor) -> None:
        """Keep the last ``window`` tokens local; the rest go to the sinks or the pending run."""
        p, out = self.parts, max(0, lk.shape[1] - self.cfg.window)
        p |= {"local_k": lk[:, out:], "local_v": lv[:, out:], "local_rk": lrk[:, out:], "local_pos": lpos[out:]}
        p["local_score"] = lscore[:, out:]
        n_sink = int((lpos[:out] < self.cfg.sinks).sum())
        for name, t in (("k", lk), ("v", lv), ("score", lscore)):
            p[f"sink_{name}"] = torch.cat([p[f"sink_{name}"], t[:, :n_sink]], dim=1)
            p[f"pend_{name}"] = torch.cat([p[f"pend_{name}"], t[:, n_sink:out]], dim=1)
        p["sink_pos"] = torch.cat([p["sink_pos"], lpos[:n_sink]])
        p["pend_pos"] = torch.cat([p["pend_pos"], lpos[n_sink:out]])
        bs = self.cfg.block_size
        while p["pend_pos"].shape[0] >= bs:
            bk, bv, bpos = p["pend_k"][:, :bs], p["pend_v"][:, :bs], p["pend_pos"][:bs]
            rep = representative_mean(bk, p["pend_score"][:, :bs], self.cfg.representatives)[:, None]
            self.reps = rep if self.reps is None else torch.cat([self.reps, rep], dim=1)
            self.blocks.append((bk, bv, bpos))
            for name in ("k", "v", "score"):
                p[f"pend_{name}"] = p[f"pend_{name}"][:, bs:]
            p["pend_pos"] = p["pend_pos"][bs:]

    @property
    def nbytes(self) -> int:
        """Bytes held: sinks, pending, local window and every block (keys, values, positions, scores)."""
        held = [*self.parts.values(), *(t for blk in self.blocks for t in blk)]
        held += [self.reps] if self.reps is not None else []
        return sum(t.numel() * t.element_size() for t in held)

    @property
    def num_blocks(self) -> int:
        """Blocks formed so far."""
        return len(self.blocks)

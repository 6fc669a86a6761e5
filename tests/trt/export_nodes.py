"""Export small models with ``spattn.export`` and write their SparseAttention nodes for the harness.

Each line of the output names one node: which inputs it has and its attributes exactly as stored in
the ``.onnx`` file (the harness builds the plugin fields from them the way TensorRT's ONNX parser
does). Usage::

    python tests/trt/export_nodes.py OUT_DIR

writes ``OUT_DIR/<model>.onnx`` and ``OUT_DIR/nodes.txt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import torch
from torch import nn

from spattn import Pattern, SparseMultiheadAttention
from spattn import export as spattn_export
from spattn.models import gqa_decoder_block, longformer_encoder


class _Attention(nn.Module):
    """One self-attention layer with a pattern (head dim 64, which the CUDA kernels support)."""

    def __init__(self, pattern: Pattern, d_model: int = 256, heads: int = 4, kv_heads: int = 4):
        super().__init__()
        self.attn = SparseMultiheadAttention(d_model, heads, pattern, num_kv_heads=kv_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)[0]


def models() -> dict[str, tuple[nn.Module, tuple]]:
    """The exported models: every attribute and both optional inputs appear in some node."""
    torch.manual_seed(0)
    x = torch.randn(2, 96, 256)
    mixed = Pattern(
        window_left=2,
        window_right=0,
        causal=True,
        num_global=4,
        stride=3,
        num_random=1,
        block_size=8,
        seed=11,
        scale=0.3,
    )
    return {
        "longformer": longformer_encoder(
            d_model=256,
            nhead=4,
            num_layers=1,
            attention_window=32,
            num_global=2,
            seq_len=96,
            batch=2,
        ),
        "gqa_decoder": gqa_decoder_block(
            d_model=256, num_heads=4, num_kv_heads=2, window=48, seq_len=96, batch=2
        ),
        "mixed": (_Attention(mixed, kv_heads=2).eval(), (x,)),
        "bigbird_exact": (
            _Attention(Pattern.bigbird(16, num_random=1, seed=2, exact_blocks=True)).eval(),
            (x,),
        ),
    }


def node_line(model: str, node: onnx.NodeProto) -> str:
    mask = "".join("1" if name else "0" for name in node.input)
    parts = [f"node model={model} name={node.name or '-'} inputs={mask}"]
    for a in node.attribute:
        if a.type == onnx.AttributeProto.INT:
            parts.append(f"{a.name}:i={a.i}")
        elif a.type == onnx.AttributeProto.FLOAT:
            parts.append(f"{a.name}:f={a.f!r}")
        elif a.type == onnx.AttributeProto.STRING:
            parts.append(f"{a.name}:s={a.s.decode()}")
        else:
            parts.append(f"{a.name}:?=unsupported")
    return " ".join(parts)


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, (model, inputs) in models().items():
        path = out / f"{name}.onnx"
        spattn_export.export(model, inputs, path, validate=False)
        proto = onnx.load(str(path))
        nodes = spattn_export.spattn_nodes(proto)
        if not nodes:
            raise RuntimeError(f"{name}: no SparseAttention node in the exported model")
        lines += [node_line(name, n) for n in nodes]
    (out / "nodes.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))

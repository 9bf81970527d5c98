"""Model compression from the cockpit: quantise with llama.cpp's own quantizer, and measure what
a variant trades — size, load time, speed, perplexity and KL divergence against its source.

- ``quantize``: ``quantize(source, qtype, out)`` in a child process, refusing to overwrite,
  checking free disk against an estimate, with per-tensor progress; ``journal_result``.
- ``quality``: perplexity and KL divergence from logits (pure numpy).
- ``evaluate``: logits from llama.cpp (``logits_all=True``) on the shipped held-out text, in a child.
- ``variants``: the variants table, a budgeted pick, a plot, the model switch, the KV-cache cost.
"""

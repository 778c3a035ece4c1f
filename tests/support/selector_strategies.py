"""Hypothesis strategies for selectors and topics over a small alphabet, so that they often match."""

from __future__ import annotations

from hypothesis import strategies as st

segment = st.sampled_from(["a", "b", "*"])
selector_text = st.builds(
    lambda segs, tail: "/".join(segs + (["**"] if tail else [])) or "**",
    st.lists(segment, max_size=4),
    st.booleans(),
)
topic_text = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=6).map("/".join)

"""Tracing: what each emulated CPU did and when, kept in rings inside the
machine file (ring.py), turned into Chrome trace-event JSON (chrome.py) or a
pfn's history (history.py). The hooks the kernel functions call are
emu.mm.trace's."""

"""The run summary's text: no Python None, honest counts, every kind shown."""

from emu.kconfig import resolve
from emu.report import first_of_each_kind, render_summary


def _v(kind, pfn, node=None):
    return {"kind": kind, "pfn": pfn, "stable_node": node, "expected_key": f"{int(node, 16) + 3:#x}" if node else None,
            "mapping": "0x0", "mapping_bytes": "00 " * 7 + "00", "written_by": "NULL", "union_members": [],
            "role": "reclaim", "cpu": 1}


def _summary(violations, total, by_kind):
    lat = {"p50": 1.0, "p99": 2.0, "max": 3.0, "n": 10}
    return {"config": resolve().as_dict(), "protocol": "keyhole-no-clear", "pages": 4096,
            "emulated_bytes": 4096 * 4096, "duration_s": 1.0, "seed": 1, "interrupted": False,
            "interrupted_by": None, "roles": [], "counts": dict.fromkeys(
                ["get_ksm_page_ok", "get_ksm_page_stale", "stable_nodes_removed", "ksm_pages_created",
                 "ksm_pages_merged", "pages_allocated", "pages_freed", "reclaimed", "reclaim_unmapped",
                 "ksmd_passes", "ptl_locks"], 0),
            "reclaim_time_to_free_us": lat, "reclaim_time_to_free_anon_us": lat, "died": [], "notes": [],
            "violations": violations, "violations_total": total, "violations_by_kind": by_kind,
            "violation_records_per_kind": 585, "state": "/x"}


def test_first_of_each_kind_first_and_no_none():
    flood = [_v("bad_page (free_pages_check)", i) for i in range(585)]
    opens = [_v("keyhole false open", 1000 + i, "0xffff880001000000") for i in range(10)]
    records = flood[:300] + opens + flood[300:]
    text = render_summary(_summary(records, 47834, {"bad_page (free_pages_check)": 47824,
                                                     "keyhole false open": 10}))
    lines = text.splitlines()
    first = [line for line in lines if line.startswith("  ")]
    assert first[0].startswith("  bad_page") and first[1].startswith("  keyhole false open: pfn 1000, stable_node")
    assert "None" not in text
    assert "20 of the 595 records kept, which --json lists" in text and "585 per kind" in text
    assert [v["pfn"] for v in first_of_each_kind(records, 3)] == [0, 1000, 1]

from __future__ import annotations

import pytest

from gpu_device_plugin.health.xid import DEFAULT_IGNORED_XIDS, IgnoredXids, describe_xid


@pytest.mark.parametrize(
    ("xid", "critical"),
    [
        (13, False),
        (31, False),
        (43, False),
        (45, False),
        (68, False),
        (109, False),
        (48, True),
        (63, True),
        (74, True),
        (79, True),
        (94, True),
        (95, True),
        (999, True),
    ],
    ids=lambda v: str(v),
)
def test_default_policy_skips_application_xids(xid: int, critical: bool) -> None:
    assert IgnoredXids().ignores(xid) is not critical


def test_parse_configures_the_list() -> None:
    assert IgnoredXids.parse("13, 79").xids == frozenset({13, 79})
    assert IgnoredXids.parse("").xids == frozenset()
    assert IgnoredXids.parse(",".join(map(str, DEFAULT_IGNORED_XIDS))) == IgnoredXids()
    with pytest.raises(ValueError, match="'x' is not an XID number"):
        IgnoredXids.parse("13,x")


def test_description_names_the_meaning() -> None:
    assert describe_xid(79) == "XID 79 (GPU has fallen off the bus)"
    assert describe_xid(12345) == "XID 12345 (unlisted driver error)"

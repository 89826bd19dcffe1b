"""Health reasons: text for people, a code for labels, kept together wherever a reason goes."""

from __future__ import annotations

import copy
import pickle

import pytest

from gpu_device_plugin.inventory.reasons import HealthReason, ReasonCode, code_of, xid_of

XID_79 = HealthReason("XID 79 (GPU has fallen off the bus)", ReasonCode.XID, xid=79)


@pytest.mark.parametrize(
    ("reason", "code", "xid"),
    [
        pytest.param(XID_79, ReasonCode.XID, 79, id="xid"),
        pytest.param(HealthReason("GPU is lost", ReasonCode.GPU_LOST), ReasonCode.GPU_LOST, None, id="coded"),
        pytest.param("", ReasonCode.RECOVERED, None, id="empty-is-recovered"),
        pytest.param("XID 79 (written by hand)", ReasonCode.OTHER, None, id="plain-text-is-never-parsed"),
    ],
)
def test_the_code_and_xid_come_from_the_reason_never_from_its_text(
    reason: str, code: ReasonCode, xid: int | None
) -> None:
    assert code_of(reason) is code
    assert xid_of(reason) == xid


def test_a_reason_reads_and_compares_as_its_text() -> None:
    assert XID_79 == "XID 79 (GPU has fallen off the bus)"
    assert f"{XID_79}" == "XID 79 (GPU has fallen off the bus)"


@pytest.mark.parametrize(
    "duplicate",
    [copy.copy, copy.deepcopy, lambda r: pickle.loads(pickle.dumps(r))],
    ids=["copy", "deepcopy", "pickle"],
)
def test_a_copied_reason_keeps_its_code(duplicate) -> None:
    again = duplicate(XID_79)
    assert (again, code_of(again), xid_of(again)) == (XID_79, ReasonCode.XID, 79)

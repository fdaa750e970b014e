"""Every series the emulator lists answers series_struct, rs_summary, rs_list and an export
through drms (one small record set per series: the last value of every prime key)."""

from __future__ import annotations

import drms
import pytest

from jsocsim.catalog import Catalog
from jsocsim.server import Emulator
from tests.emulator.helpers import EMAIL
from tests.emulators import server_config

pytestmark = pytest.mark.emulator(emails=[EMAIL], staging_delay=0.05,
                                  clock_start="2016.03.01_00:00:00_TAI")


@pytest.fixture(scope="module")
def walker(shared_emu: Emulator) -> tuple[Emulator, drms.Client]:
    return shared_emu, drms.Client(server_config(shared_emu.base_url), email=EMAIL)


def test_server_lists_the_whole_catalog(walker: tuple[Emulator, drms.Client]) -> None:
    _, client = walker
    catalog = Catalog.load()
    assert client.series() == catalog.names()
    for series in catalog.all():  # links point into the catalog, so they can resolve
        for link in series.links:
            assert link.target in catalog, f"{series.name} link {link.name} -> {link.target}"


@pytest.mark.parametrize("name", Catalog.load().names())
def test_series_answers_every_operation(walker: tuple[Emulator, drms.Client], name: str) -> None:
    _, client = walker
    info = client.info(name)
    assert info.name.lower() == name.lower() and info.primekeys
    ds = name + "[$]" * len(info.primekeys)
    count = client._json.rs_summary(ds)["count"]
    assert count >= 1
    keys, segs, links = client.query(ds, key="**ALL**", seg="**ALL**", link="**ALL**")
    assert len(keys) == count and list(keys.columns) == list(info.keywords.index)
    assert list(segs.columns) == list(info.segments.index)
    assert not (segs.isin(["InvalidSegName", "NoDataDirectory"]).any().any())
    assert not links.isin(["Invalid_Link"]).any().any()
    export = client.export(ds)  # url_quick, as-is: answered at once
    assert export.has_succeeded(), export.status
    assert len(export.data) == count * len(info.segments)
    assert all(r.endswith("}") for r in export.data.record)

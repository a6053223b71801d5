import pytest

from volley.system.cpus import CpuError, format_cpu_list, parse_cpu_list, place, spread


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0", [0]),
        ("0-3", [0, 1, 2, 3]),
        ("0,2,4-7", [0, 2, 4, 5, 6, 7]),
        ("3,1,1-2", [1, 2, 3]),
        (" 5 , 7 ", [5, 7]),
        ("0-39", list(range(40))),
    ],
)
def test_parse_cpu_list(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "1-", "-1", "3-1", "1,,2", "0x1", "1-2-3"])
def test_parse_cpu_list_rejects_malformed(text):
    with pytest.raises(CpuError):
        parse_cpu_list(text)


@pytest.mark.parametrize("cpus", [[0], [0, 1, 2], [0, 2, 4, 5, 6, 7], list(range(80)), [3, 9]])
def test_format_round_trips(cpus):
    assert parse_cpu_list(format_cpu_list(cpus)) == cpus


def test_format_is_compact():
    assert format_cpu_list([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


def test_default_placement_splits_halves_without_sharing():
    p = place(None, None, usable=list(range(80)))
    assert p.server_cpus == list(range(40)) and p.client_cpus == list(range(40, 80))
    assert p.warning is None
    two = place(None, None, usable=[0, 1])
    assert (two.server_cpus, two.client_cpus, two.warning) == ([0], [1], None)


def test_one_cpu_is_shared_with_a_warning():
    p = place(None, None, usable=[3])
    assert p.server_cpus == [3] and p.client_cpus == [3]
    assert p.warning and "share CPU 3" in p.warning


def test_only_client_cores_gives_server_the_rest():
    p = place("2-3", None, usable=[0, 1, 2, 3])
    assert p.server_cpus == [0, 1] and p.client_cpus == [2, 3] and p.warning is None


def test_only_server_cores_gives_clients_the_rest():
    p = place(None, "0", usable=[0, 1, 2])
    assert p.client_cpus == [1, 2]


def test_overlapping_lists_warn():
    p = place("0-1", "1", usable=[0, 1])
    assert p.warning and "share CPU 1" in p.warning


def test_cpus_outside_the_affinity_mask_are_refused():
    with pytest.raises(CpuError, match="--cores names CPU 5-6, which this process may not use"):
        place("0,5-6", None, usable=[0, 1, 2])
    with pytest.raises(CpuError, match="--server-cores"):
        place(None, "9", usable=[0, 1])


def test_spread_deals_clients_round_robin():
    assert spread(5, [4, 5]) == [[0, 2, 4], [1, 3]]
    assert spread(2, [0, 1, 2, 3]) == [[0], [1]]  # no empty workers
    groups = spread(80, list(range(40)))
    assert len(groups) == 40 and all(len(g) == 2 for g in groups)
    assert sorted(c for g in groups for c in g) == list(range(80))

"""Where the work runs (``execution:``, ``--ray``): addresses and options are checked before
any work, an unreachable cluster is an error in seconds (Ray itself retries for minutes), and a
cluster too small for the workers asked for is used as far as it fits, never waited on for ever."""

from __future__ import annotations

import socket

import pytest

from medrobust.cli.option_values import execution_section
from medrobust.evaluation.config import ExecutionConfig, check_ray_address
from medrobust.execution.engines import check_reachable, schedulable_workers
from medrobust.launch import bare_ray_flag


@pytest.mark.parametrize("given, kept", [("local", None), ("LOCAL", None), ("auto", "auto"),
                                         ("10.0.0.5:6379", "10.0.0.5:6379"), ("ray://head:10001", "ray://head:10001"),
                                         (" head.example.org:6379 ", "head.example.org:6379")])
def test_ray_addresses_accepted(given, kept) -> None:
    assert check_ray_address(given) == kept


@pytest.mark.parametrize("given, fragment", [("bogus", "not one of"), ("", "not one of"),
                                             ("run.yaml", "put --ray after it"), ("http://head:6379", "not one of")])
def test_ray_addresses_refused_with_what_is_accepted(given, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_ray_address(given)


def test_execution_options_are_checked_in_the_configuration() -> None:
    assert ExecutionConfig(engine="ray", address="local").address is None
    with pytest.raises(ValueError, match="Ray options"):
        ExecutionConfig(engine="local", workers=4)
    with pytest.raises(ValueError, match="whole number"):
        ExecutionConfig(engine="ray", gpus_per_worker=2.5)
    assert ExecutionConfig(engine="ray", gpus_per_worker=0.5).gpus_per_worker == 0.5
    with pytest.raises(ValueError, match="add --ray"):
        execution_section(None, 2)
    assert execution_section("local", 2) == {"engine": "ray", "address": None, "workers": 2}


def test_a_bare_ray_flag_means_a_local_instance() -> None:
    assert bare_ray_flag(["evaluate", "run.yaml", "--ray"]) == ["evaluate", "run.yaml", "--ray", "local"]
    assert bare_ray_flag(["evaluate", "--ray", "--workers", "2"]) == ["evaluate", "--ray", "local", "--workers", "2"]
    assert bare_ray_flag(["evaluate", "--ray", "run.yaml"]) == ["evaluate", "--ray", "local", "run.yaml"]
    assert bare_ray_flag(["evaluate", "--ray", "auto", "run.yaml"]) == ["evaluate", "--ray", "auto", "run.yaml"]


def test_an_unreachable_cluster_is_an_error_at_once() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(ConnectionError, match=f"cannot reach the Ray cluster at {address}"):
            check_reachable(address, timeout_s=2)
    check_reachable("auto")  # left to Ray


def test_workers_are_capped_to_what_the_cluster_holds() -> None:
    assert schedulable_workers({"CPU": 2.0}, None, 1, 0) == 2
    assert schedulable_workers({"CPU": 2.0}, 16, 1, 0) == 2
    assert schedulable_workers({"CPU": 8.0, "GPU": 2.0}, None, 1, 0.5) == 4
    assert schedulable_workers({"CPU": 8.0, "GPU": 2.0}, 3, 1, 1) == 2
    with pytest.raises(ValueError, match="0 GPU"):
        schedulable_workers({"CPU": 8.0}, 2, 1, 1)


def test_phantom_and_a_folder_named_phantom_are_not_confused(tmp_path, monkeypatch) -> None:
    from medrobust.data.errors import DataSourceError
    from medrobust.data.sources import open_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "phantom").mkdir()
    with pytest.raises(DataSourceError, match="./phantom"):
        open_dataset("phantom", size=32, per_class=2)
    assert len(open_dataset("phantom:per_class=2", size=32)) == 6

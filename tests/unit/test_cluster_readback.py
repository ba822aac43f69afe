from __future__ import annotations

import pytest

from engine.service.cluster.errors import ClusterConfigError, ClusterError
from engine.service.cluster.readback import check_readback


def test_equal_configs_pass() -> None:
    check_readback("stream", "S", {"subjects": ["a.>"], "max_age": 2.0, "x": None},
                   {"subjects": ("a.>",), "max_age": 2.0000000001, "num_replicas": 1})


def test_a_dropped_field_is_named() -> None:
    with pytest.raises(ClusterConfigError, match=r"consumer 'C' differs .*filter_subjects: "
                       r"asked \['a', 'b'\], the server dropped it"):
        check_readback("consumer", "C", {"filter_subjects": ["a", "b"]}, {"durable_name": "C"})


def test_a_changed_field_is_named_and_the_error_is_a_cluster_and_value_error() -> None:
    with pytest.raises(ClusterError, match=r"num_replicas: asked 3, the server has 1") as info:
        check_readback("stream", "S", {"num_replicas": 3}, {"num_replicas": 1})
    assert isinstance(info.value, ValueError)

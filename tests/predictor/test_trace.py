"""predictor.trace: parsing, formatting, class and interval inference, bad input."""

import math

import pytest

from predictor.trace import (
    DeviceClass,
    Sample,
    TraceError,
    class_from_name,
    format_trace,
    group_by_time,
    infer_interval,
    parse_trace,
)

HEADER = "time_s,device,read_p99_ms,write_p99_ms,read_iops,write_iops,errors"


def test_class_from_name_and_column() -> None:
    assert class_from_name("nvme0") is DeviceClass.NVME
    assert class_from_name("HDD-3") is DeviceClass.HDD
    assert class_from_name("disk7") is DeviceClass.UNKNOWN
    text = f"{HEADER},class\n10,disk7,1,2,3,4,0,ssd\n10,hdd1,1,2,3,4,0,\n"
    samples = parse_trace(text)
    assert [s.device_class for s in samples] == [DeviceClass.SSD, DeviceClass.HDD]


def test_round_trip_is_exact_and_sorted() -> None:
    samples = [
        Sample(20.0, "ssd0", 1.2345678901, math.nan, 10.0, 0.0, 1.0, DeviceClass.SSD),
        Sample(10.0, "ssd0", 0.1 + 0.2, 3.0, 10.0, 5.5, 0.0, DeviceClass.SSD),
    ]
    parsed = parse_trace(format_trace(samples))
    assert [s.time_s for s in parsed] == [10.0, 20.0]
    assert parsed[0].read_p99_ms == 0.1 + 0.2  # bit-exact
    assert math.isnan(parsed[1].write_p99_ms)
    assert parsed[1].read_p99_ms == 1.2345678901


def test_infer_interval() -> None:
    rows = [f"{t},hdd{d},5,5,10,10,0" for t in range(10, 200, 10) for d in range(3)]
    assert infer_interval(parse_trace(HEADER + "\n" + "\n".join(rows))) == 10.0
    # a silent device's gap does not change the inferred interval
    rows += ["500,hdd0,5,5,10,10,0"]
    assert infer_interval(parse_trace(HEADER + "\n" + "\n".join(rows))) == 10.0
    too_slow = [f"{t},hdd0,5,5,10,10,0" for t in range(0, 1000, 120)]
    with pytest.raises(TraceError, match="outside 1-60"):
        infer_interval(parse_trace(HEADER + "\n" + "\n".join(too_slow)))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time_s,device\n1,a\n", "header lacks"),
        (HEADER + "\n1,ssd0,-1,2,3,4,0\n", "must be finite"),
        (HEADER + "\n1,ssd0,x,2,3,4,0\n", "not a number"),
        (HEADER + "\n1,,1,2,3,4,0\n", "empty device"),
        (HEADER + ",class\n1,a,1,2,3,4,0,tape\n", "not nvme"),
    ],
)
def test_bad_input(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace(text)


def test_group_by_time() -> None:
    samples = parse_trace(HEADER + "\n1,a,1,1,1,1,0\n1,b,1,1,1,1,0\n2,a,1,1,1,1,0\n")
    groups = [(t, [s.device for s in g]) for t, g in group_by_time(samples)]
    assert groups == [(1.0, ["a", "b"]), (2.0, ["a"])]

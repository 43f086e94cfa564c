"""The SVG chart of a series answer: parsed back as XML, so a broken document fails here, not in a browser."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from models.monitoring import Series, SeriesAnswer
from services.charts import PLOT_LEFT, PLOT_RIGHT, render_chart

SVG = "{http://www.w3.org/2000/svg}"
TAIPEI = ZoneInfo("Asia/Taipei")
START = datetime(2024, 12, 1, 5, 0, tzinfo=UTC)
END = datetime(2024, 12, 1, 7, 0, tzinfo=UTC)


def _answer(
    series: list[Series],
    unavailable: dict[str, str] | None = None,
    start: datetime = START,
    end: datetime = END,
    step_seconds: int = 60,
) -> SeriesAnswer:
    return SeriesAnswer(
        workload_id="c1",
        pod="main",
        start=start,
        end=end,
        step_seconds=step_seconds,
        series=series,
        unavailable=unavailable or {},
    )


def _steady(name: str, unit: str, value: float, minutes: int = 120, step: int = 1) -> Series:
    points = [(START + timedelta(minutes=m), value) for m in range(0, minutes + 1, step)]
    return Series(name=name, unit=unit, points=points)


def _render(answer: SeriesAnswer, title: str = "c1 utilisation", zone: ZoneInfo = TAIPEI) -> ET.Element:
    return ET.fromstring(render_chart(answer, zone, title))


def _paths(root: ET.Element) -> list[ET.Element]:
    return list(root.iter(f"{SVG}path"))


def _texts(root: ET.Element) -> list[str]:
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def test_document_is_standalone_svg() -> None:
    root = _render(_answer([_steady("gpu_percent[0]", "%", 40)]))
    assert root.tag == f"{SVG}svg"
    assert root.get("width") and root.get("height") and root.get("viewBox")
    assert root.get("font-family") == "sans-serif"
    backgrounds = [rect for rect in root.iter(f"{SVG}rect") if rect.get("fill") == "#ffffff"]
    assert backgrounds, "a white background, so the chart reads when opened directly"
    assert list(root.iter(f"{SVG}line")), "grid lines"


def test_one_path_per_series_and_no_other_paths() -> None:
    series = [
        _steady("gpu_percent[0]", "%", 40),
        _steady("vcpu_percent", "%", 20),
        _steady("network_in", "B/s", 5e3),
    ]
    root = _render(_answer(series))
    paths = _paths(root)
    assert len(paths) == 3
    assert all(path.get("class") == "series" for path in paths)
    headings = [text for text in _texts(root) if text.endswith(")")]
    assert headings[:3] == ["gpu_percent[0] (%)", "vcpu_percent (%)", "network_in (B/s)"]


def test_gap_longer_than_two_steps_starts_a_new_subpath() -> None:
    before = [(START + timedelta(minutes=m), 30.0) for m in range(0, 10)]
    after = [(START + timedelta(minutes=m), 60.0) for m in range(20, 30)]
    root = _render(_answer([Series(name="memory_percent", unit="%", points=before + after)]))
    (path,) = _paths(root)
    assert (path.get("d") or "").count("M") == 2


def test_gap_of_two_steps_keeps_the_line() -> None:
    points = [(START + timedelta(minutes=m), 30.0) for m in (0, 1, 3, 4)]
    root = _render(_answer([Series(name="memory_percent", unit="%", points=points)]))
    (path,) = _paths(root)
    assert (path.get("d") or "").count("M") == 1


def test_a_lone_sample_between_gaps_is_drawn_as_a_dot() -> None:
    points = [(START, 10.0), (START + timedelta(minutes=30), 20.0), (START + timedelta(minutes=31), 20.0)]
    root = _render(_answer([Series(name="gpu_percent[0]", unit="%", points=points)]))
    (path,) = _paths(root)
    words = (path.get("d") or "").split()
    assert words[3] == "h0" and words.count("M") == 2


def test_x_range_is_the_asked_range_not_the_data() -> None:
    """Samples covering only the middle half of the range stay in the middle half of the plot."""
    points = [(START + timedelta(minutes=m), 10.0) for m in range(30, 91)]
    root = _render(_answer([Series(name="gpu_percent[0]", unit="%", points=points)]))
    (path,) = _paths(root)
    words = (path.get("d") or "").split()
    quarter = (PLOT_RIGHT - PLOT_LEFT) / 4
    assert words[:2] == ["M", f"{PLOT_LEFT + quarter:.1f}"]
    assert words[-2] == f"{PLOT_RIGHT - quarter:.1f}"


def test_time_labels_are_in_the_given_time_zone() -> None:
    root = _render(_answer([_steady("gpu_percent[0]", "%", 40)]))
    texts = _texts(root)
    assert "14:00" in texts  # 06:00 UTC in Taipei
    assert "06:00" not in texts
    assert any("times in Asia/Taipei" in text for text in texts)
    utc_texts = _texts(_render(_answer([_steady("gpu_percent[0]", "%", 40)]), zone=ZoneInfo("UTC")))
    assert "06:00" in utc_texts


def test_percent_axis_is_zero_to_a_hundred_with_the_unit() -> None:
    texts = _texts(_render(_answer([_steady("gpu_percent[0]", "%", 40)])))
    assert "0 %" in texts and "100 %" in texts
    assert "120 %" not in texts


def test_percent_axis_stretches_for_a_vcpu_burst() -> None:
    texts = _texts(_render(_answer([_steady("vcpu_percent", "%", 137)])))
    assert "150 %" in texts
    assert "200 %" not in texts


def test_byte_rate_axis_scales_to_megabytes() -> None:
    texts = _texts(_render(_answer([_steady("network_out", "B/s", 4.2e6)])))
    labels = [text for text in texts if text.endswith("MB/s")]
    assert "0 MB/s" in labels and "5 MB/s" in labels
    assert not any(
        text.endswith(" B/s") and not text.endswith("MB/s") for text in texts[3:] if text[0].isdigit()
    )


def test_byte_rate_axis_uses_plain_bytes_for_small_rates() -> None:
    texts = _texts(_render(_answer([_steady("network_in", "B/s", 420)])))
    assert "500 B/s" in texts


def test_unavailable_metrics_get_a_text_panel() -> None:
    answer = _answer([_steady("vcpu_percent", "%", 20)], unavailable={"gpu_percent": "no GPU in this pod"})
    root = _render(answer)
    assert "gpu_percent: unavailable — no GPU in this pod" in _texts(root)
    assert len(_paths(root)) == 1


def test_hostile_text_is_escaped_and_still_parses() -> None:
    hostile = "<script>alert(1)</script>&\"'"
    answer = _answer(
        [Series(name=hostile, unit="%", points=[(START, 5.0)])],
        unavailable={hostile: hostile},
    )
    document = render_chart(answer, TAIPEI, hostile)
    assert "<script>" not in document
    root = ET.fromstring(document)
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    texts = _texts(root)
    assert hostile in texts  # the title, intact once parsed
    assert f"{hostile}: unavailable — {hostile}" in texts


def test_characters_xml_forbids_do_not_break_the_document() -> None:
    answer = _answer([], unavailable={"network_in": "runtime said \x00\x1b[31m"})
    root = _render(answer, title="bell\x07")
    assert any(text.startswith("network_in: unavailable — runtime said") for text in _texts(root))


def test_empty_series_gets_an_empty_path_and_a_note() -> None:
    root = _render(_answer([Series(name="gpu_percent[0]", unit="%", points=[])]))
    (path,) = _paths(root)
    assert path.get("d") == ""
    assert "no samples in this range" in _texts(root)


def test_multi_day_range_shows_the_date() -> None:
    start, end = datetime(2024, 12, 1, 0, 0, tzinfo=UTC), datetime(2024, 12, 3, 0, 0, tzinfo=UTC)
    points = [(start + timedelta(hours=h), 50.0) for h in range(49)]
    answer = _answer(
        [Series(name="gpu_percent[0]", unit="%", points=points)], start=start, end=end, step_seconds=3600
    )
    texts = _texts(_render(answer))
    assert "12-02 00:00" in texts  # ticks fall on Taipei's midnight, not UTC's
    assert "00:00" not in texts


def test_single_day_range_shows_times_only() -> None:
    texts = _texts(_render(_answer([_steady("gpu_percent[0]", "%", 40)])))
    assert not any(text.startswith("12-01 ") for text in texts)

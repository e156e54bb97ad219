"""Usage accounting's running aggregate and the idle-GPU rule (core/usage_accounting.py), plus the GPU readers."""

from __future__ import annotations

import json

import pytest

from kubetrain.core.records import GpuUse, UsageRecord
from kubetrain.core.usage_accounting import IdleRule, fold, format_window, idle_message, should_warn
from kubetrain.engines.gpus import FakeGpuReader, NoGpuReader, gpu_reader

RULE = IdleRule(utilization=5, seconds=60)


def reading(cpu=None, memory=None, gpus=(), replica=0, node="n1") -> UsageRecord:
    """One replica's reading; ``gpus``: (index, utilization, memory) per GPU held."""
    return UsageRecord(job="j", attempt=1, replica=replica, node=node, cpu_millis=cpu, memory_bytes=memory,
                       gpus=[g[0] for g in gpus],
                       gpu_devices=[GpuUse(index=i, utilization=u, memory_bytes=m) for i, u, m in gpus])


def run(samples, rule=RULE):
    """Fold ``(time, [readings])`` in order; the documents after each."""
    doc, docs = None, []
    for now, records in samples:
        doc = fold(doc, records, now=now, rule=rule)
        docs.append(doc)
    return docs


def test_cpu_and_memory_average_peak_and_live():
    docs = run([(0, [reading(cpu=100, memory=10)]), (10, [reading(cpu=300, memory=50)]),
                (20, [reading(cpu=200, memory=20)])])
    last = docs[-1]
    assert last["samples"] == 3 and last["first_at"] == 0 and last["last_at"] == 20
    assert last["cpu_millis"] == 200 and last["cpu_millis_avg"] == pytest.approx(200) and last["cpu_millis_peak"] == 300
    assert last["memory_bytes"] == 20 and last["memory_peak_bytes"] == 50


def test_an_unmeasured_sample_keeps_the_figures_and_is_not_averaged_in():
    docs = run([(0, [reading(cpu=100, memory=10)]), (10, [reading()])])
    assert docs[-1]["cpu_millis"] is None and docs[-1]["cpu_millis_avg"] == 100 and docs[-1]["memory_peak_bytes"] == 10


def test_replicas_are_summed_and_their_gpus_kept_apart():
    docs = run([(0, [reading(cpu=100, memory=10, gpus=[(0, 50, 1000)]),
                     reading(cpu=200, memory=30, gpus=[(0, 70, 3000)], replica=1, node="n2")])])
    doc = docs[0]
    assert doc["cpu_millis"] == 300 and doc["memory_bytes"] == 40
    assert set(doc["gpus"]) == {"0", "r1:0"}
    assert doc["nodes"]["n2"]["gpu_utilization"] == 70 and doc["nodes"]["n1"]["gpu_memory_bytes"] == 1000


def test_per_gpu_average_and_peak():
    docs = run([(0, [reading(gpus=[(0, 10, 100), (1, 80, 500)])]), (10, [reading(gpus=[(0, 30, 300), (1, 40, 200)])]),
                (20, [reading(gpus=[(0, None, None), (1, 60, 100)])])])
    gpus = docs[-1]["gpus"]
    assert gpus["0"]["samples"] == 2 and gpus["0"]["utilization_avg"] == pytest.approx(20)
    assert gpus["0"]["utilization_peak"] == 30 and gpus["0"]["memory_peak_bytes"] == 300
    assert gpus["0"]["utilization"] is None  # not read this round: shown as unknown, the aggregate kept
    assert gpus["1"]["utilization_avg"] == pytest.approx(60) and gpus["1"]["utilization_peak"] == 80
    assert gpus["1"]["memory_bytes"] == 100 and gpus["1"]["memory_peak_bytes"] == 500


LOW, HIGH, UNKNOWN = 1.0, 90.0, None


@pytest.mark.parametrize("timeline, idle_after", [
    # (time, utilization of each GPU held) per sample -> is it idle after the last one?
    ([(0, [LOW]), (30, [LOW]), (59, [LOW])], False),          # not yet the whole window
    ([(0, [LOW]), (30, [LOW]), (60, [LOW])], True),           # below for the window: idle
    ([(0, [LOW, LOW]), (60, [LOW, LOW])], True),              # every GPU below
    ([(0, [LOW, HIGH]), (60, [LOW, HIGH])], False),           # one GPU busy: not idle
    ([(0, [LOW]), (30, [HIGH]), (60, [LOW]), (100, [LOW])], False),  # a busy sample restarts the clock
    ([(0, [LOW]), (30, [HIGH]), (60, [LOW]), (120, [LOW])], True),
    ([(0, [UNKNOWN]), (60, [UNKNOWN])], False),               # no NVML: never called idle
    ([(0, [LOW]), (30, [UNKNOWN]), (60, [LOW])], False),      # an unknown restarts the clock too
    ([(0, []), (120, [])], False),                            # holds no GPU
    ([(0, [4.9]), (60, [4.9])], True),                        # just below the threshold
    ([(0, [5.0]), (60, [5.0])], False),                       # at the threshold: not below
])
def test_idle_rule(timeline, idle_after):
    docs = run([(t, [reading(gpus=[(i, u, 0) for i, u in enumerate(utils)])]) for t, utils in timeline])
    assert docs[-1]["idle_gpu"] is idle_after


def test_idle_again_after_work_and_a_zero_threshold_never_warns():
    docs = run([(0, [reading(gpus=[(0, 0, 0)])]), (600, [reading(gpus=[(0, 0, 0)])])], rule=IdleRule(0, 60))
    assert docs[-1]["idle_gpu"] is False


def test_warned_once():
    idle = {"idle_gpu": True}
    assert should_warn(idle, None) is True
    assert should_warn(idle, 123.0) is False
    assert should_warn({"idle_gpu": False}, None) is False
    assert should_warn(None, None) is False


def test_the_message_names_gpus_threshold_window_and_what_to_do():
    doc = run([(0, [reading(gpus=[(0, 1, 0), (1, 2, 0)])]), (1800, [reading(gpus=[(0, 1, 0), (1, 2, 0)])])],
              rule=IdleRule(5, 1800))[-1]
    assert idle_message(doc, IdleRule(5, 1800)) == "GPUs 0,1 below 5 % for 30m; free them for others, or cancel it"
    one = run([(0, [reading(gpus=[(3, 1, 0)])])])[-1]
    assert idle_message(one, IdleRule(2.5, 90)).startswith("GPU 3 below 2.5 % for 1m30s;")


@pytest.mark.parametrize("seconds, text", [(1800, "30m"), (45, "45s"), (5400, "1h30m"), (0, "0s"), (3600, "1h")])
def test_format_window(seconds, text):
    assert format_window(seconds) == text


def test_fake_reader_reads_its_file_at_every_call(tmp_path):
    path = tmp_path / "nvml.json"
    path.write_text(json.dumps({"0": {"utilization": 1, "memoryUsed": 2048}}))
    reader = FakeGpuReader(str(path))
    assert reader.read([0, 1]) == {0: (1.0, 2048), 1: (None, None)}
    path.write_text(json.dumps({"0": {"utilization": 90}, "1": {"utilization": 3, "memoryUsed": 5}}))
    assert reader.read([0, 1]) == {0: (90.0, None), 1: (3.0, 5)}
    path.write_text("not json")
    assert reader.read([0]) == {0: (None, None)}


def test_reader_choice(tmp_path):
    assert isinstance(gpu_reader({"KUBETRAIN_FAKE_NVML": str(tmp_path / "x.json")}), FakeGpuReader)
    assert not isinstance(gpu_reader({}), FakeGpuReader)
    assert NoGpuReader().read([2]) == {2: (None, None)}
    # Without pynvml (or a driver) the real reader says "unknown", never raises.
    assert all(v == (None, None) or v[0] is not None for v in gpu_reader({}).read([0]).values())


def _monitoring(tmp_path, config: str | None = None, **env: str):
    from kubetrain.settings import load_settings

    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
    return load_settings({"KUBETRAIN_HOME": str(tmp_path), **env}).monitoring


def test_monitoring_settings_defaults_config_and_variables(tmp_path):
    defaults = _monitoring(tmp_path)
    assert (defaults.sample_seconds, defaults.idle_gpu_utilization, defaults.idle_gpu_seconds) == (10, 5, 1800)
    configured = _monitoring(tmp_path, "monitoring: {sampleSeconds: 2, idleGpu: {utilization: 10, minutes: 5}}")
    assert (configured.sample_seconds, configured.idle_gpu_utilization, configured.idle_gpu_seconds) == (2, 10, 300)
    assert _monitoring(tmp_path, "monitoring: {idleGpu: {seconds: 45}}").idle_gpu_seconds == 45
    assert _monitoring(tmp_path, "monitoring: {idleGpu: {minutes: 5}}", KUBETRAIN_IDLE_GPU_SECONDS="3",
                       KUBETRAIN_SAMPLE_SECONDS="0.5").idle_gpu_seconds == 3


@pytest.mark.parametrize("config, env, words", [
    ("monitoring: {sampleSecs: 2}", {}, "unknown field(s) ['sampleSecs']"),
    ("monitoring: {idleGpu: {percent: 2}}", {}, "monitoring.idleGpu: unknown field(s) ['percent']"),
    ("monitoring: {idleGpu: {minutes: 1, seconds: 2}}", {}, "minutes or seconds, not both"),
    ("monitoring: {sampleSeconds: 0}", {}, "config.yaml monitoring.sampleSeconds: 0 is not a number of seconds"),
    ("monitoring: {idleGpu: {utilization: 150}}", {}, "monitoring.idleGpu.utilization: 150 is not a percent"),
    ("monitoring: {idleGpu: {minutes: soon}}", {}, "monitoring.idleGpu.minutes: 'soon' is not a positive duration"),
    (None, {"KUBETRAIN_SAMPLE_SECONDS": "x"}, "KUBETRAIN_SAMPLE_SECONDS: 'x' is not a number of seconds"),
])
def test_monitoring_settings_errors_name_key_value_and_fix(tmp_path, config, env, words):
    from kubetrain.core.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        _monitoring(tmp_path, config, **env)
    assert words in str(caught.value)

"""The Raspberry Pi sensor: `vcgencmd pmic_read_adc` and `get_throttled` on recorded output, through a
fake vcgencmd executable (argv only, no shell), and its availability reasons."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from edgeprof.sensors.energy import condition_metrics, plan_energy
from edgeprof.sensors.raspberrypi import (VcgencmdSensor, decode_throttled, parse_pmic_adc, parse_throttled,
                                          rail_powers_w)
from edgeprof.sensors.registry import candidate_sensors

# Recorded on a Raspberry Pi 5 under load, published in the README of
# https://github.com/jfikar/RPi5-power (firmware format: LABEL_A current(N)=...A / LABEL_V volt(N)=...V,
# currents first, EXT5V_V and BATT_V with a voltage only).
PI5_LOADED = """\
 3V7_WL_SW_A current(0)=0.00000000A
   3V3_SYS_A current(1)=0.06245952A
   1V8_SYS_A current(2)=0.16102850A
  DDR_VDD2_A current(3)=0.00780744A
  DDR_VDDQ_A current(4)=0.00000000A
   1V1_SYS_A current(5)=0.17566740A
    0V8_SW_A current(6)=0.32791250A
  VDD_CORE_A current(7)=10.87674000A
   3V3_DAC_A current(17)=0.00036630A
   3V3_ADC_A current(18)=0.00042735A
   0V8_AON_A current(16)=0.00579975A
      HDMI_A current(22)=0.01367520A
 3V7_WL_SW_V volt(8)=3.79999600V
   3V3_SYS_V volt(9)=3.30632200V
   1V8_SYS_V volt(10)=1.79828900V
  DDR_VDD2_V volt(11)=1.10292900V
  DDR_VDDQ_V volt(12)=0.60476130V
   1V1_SYS_V volt(13)=1.10439400V
    0V8_SW_V volt(14)=0.80256330V
  VDD_CORE_V volt(15)=0.89745940V
   3V3_DAC_V volt(20)=3.30494200V
   3V3_ADC_V volt(21)=3.30219400V
   0V8_AON_V volt(19)=0.79736190V
      HDMI_V volt(23)=5.07056000V
     EXT5V_V volt(24)=5.06788000V
      BATT_V volt(25)=3.01110800V
"""

# The bare `LABEL_V=...V` / `LABEL_A=...A` lines that https://pitop.hongjunwu.com/hardware/pi-features
# documents as pmic_read_adc's format on some firmware (values from that page).
PI5_BARE = """\
VDD_CORE_V=0.8750V
VDD_CORE_A=1.2340A
VDD_CPU_V=0.9000V
VDD_CPU_A=0.5670A
"""

# `vcgencmd get_throttled` as recorded in https://pastebin.com/xRpwmYYs (under-voltage and throttled now,
# both since boot too); bit meanings as tabulated in https://wener.me/notes/hardware/sbc/rpi/vcgencmd.
THROTTLED_RECORDED = "throttled=0x50005\n"
# A Pi 4's firmware has no PMIC ADC: the command is not registered (vcgencmd's reply to unknown commands).
PI4_NO_PMIC = 'error=1 error_msg="Command not registered"\n'
# What vcgencmd prints when /dev/vchiq is closed to the user (not in the video group).
NOT_PERMITTED = "VCHI initialization failed\n"


def _fake_vcgencmd(tmp_path, replies: dict[str, tuple[int, str]]):
    """An executable that answers `vcgencmd COMMAND` from `replies` (exit code, output)."""
    script = tmp_path / "vcgencmd"
    script.write_text(f"#!{sys.executable}\nimport sys\nreplies = {replies!r}\n"
                      "code, text = replies.get(sys.argv[1], (1, 'error=2 error_msg=\"Invalid arguments\"\\n'))\n"
                      "sys.stdout.write(text)\nsys.exit(code)\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_pmic_rails_parsed_and_summed_where_both_readings_exist():
    rails = parse_pmic_adc(PI5_LOADED)
    assert len(rails) == 14
    assert rails["VDD_CORE"] == {"A": 10.87674, "V": 0.8974594}
    assert rails["EXT5V"] == {"V": 5.06788} and rails["BATT"] == {"V": 3.011108}
    powers = rail_powers_w(rails)
    assert set(powers) == set(rails) - {"EXT5V", "BATT"}  # the input and the RTC battery have no current
    expected = sum(float(a) * float(v) for a, v in [
        ("0", "3.799996"), ("0.06245952", "3.306322"), ("0.1610285", "1.798289"), ("0.00780744", "1.102929"),
        ("0", "0.6047613"), ("0.1756674", "1.104394"), ("0.3279125", "0.8025633"), ("10.87674", "0.8974594"),
        ("0.0003663", "3.304942"), ("0.00042735", "3.302194"), ("0.00579975", "0.7973619"), ("0.0136752", "5.07056")])
    assert sum(powers.values()) == pytest.approx(expected, rel=1e-12)  # the same products, summed in another order
    assert 10.0 < sum(powers.values()) < 11.0  # VDD_CORE alone is 9.76 W of it


def test_bare_format_and_noise_lines():
    rails = parse_pmic_adc(PI5_BARE + "\nsome banner\n" + PI4_NO_PMIC)
    assert rails == {"VDD_CORE": {"V": 0.875, "A": 1.234}, "VDD_CPU": {"V": 0.9, "A": 0.567}}
    assert parse_pmic_adc(PI4_NO_PMIC) == {}


def test_get_throttled_bits_now_and_since_boot():
    assert parse_throttled(THROTTLED_RECORDED) == 0x50005
    assert decode_throttled(0x50005) == {"now": ["under_voltage", "throttled"],
                                         "since_boot": ["under_voltage", "throttled"]}
    assert decode_throttled(0xA) == {"now": ["arm_freq_capped", "soft_temp_limit"], "since_boot": []}
    assert decode_throttled(0x80000)["since_boot"] == ["soft_temp_limit"]
    assert parse_throttled("throttled=0x0") == 0 and parse_throttled("garbage") is None


def test_sensor_on_a_fake_pi5(tmp_path):
    fake = _fake_vcgencmd(tmp_path, {"pmic_read_adc": (0, PI5_LOADED), "get_throttled": (0, THROTTLED_RECORDED)})
    sensor = VcgencmdSensor(fake, sample_hz=10, period_budget_s=0.05)
    availability = sensor.probe()
    assert availability.available, availability.reason
    assert "since boot: under_voltage, throttled" in availability.reason
    assert "not the 5 V input" in availability.reason
    metrics = {m.name: m for m in sensor.metrics()}
    power = metrics["rpi.pmic.power_w"]
    assert (power.kind, power.domain, power.scope) == ("power_w", "pmic-rails", "component")
    # Each read spawns a process: the period is at least the self-imposed read interval, and says why.
    assert power.period_s >= 0.5 and power.period_note
    assert metrics["rpi.throttled"].kind == "throttle"
    values = sensor.read()
    assert values["rpi.pmic.power_w"] == pytest.approx(sum(rail_powers_w(parse_pmic_adc(PI5_LOADED)).values()))
    assert values["rpi.pmic.EXT5V.volt_v"] == 5.06788 and values["rpi.throttled"] == 0x50005
    # The next reads fall between the self-throttled ones: nothing is read, nothing is invented.
    assert all(sensor.read() == {} for _ in range(sensor._every - 1))
    assert sensor.read()  # and the one after reads again
    plan = plan_energy(sensor.metrics(), 0.1)
    assert plan.total == ["pmic-rails"] and "no whole-device measurement" in plan.note


def test_window_reasons_use_the_pi_table_not_nvmls():
    metrics = VcgencmdSensor.__new__(VcgencmdSensor)
    metrics._pmic, metrics._throttled, metrics._rails, metrics._period = False, True, [], (1.0, "")
    figures = condition_metrics(metrics.metrics(), [0.0, 1.0], [{"rpi.throttled": float(0x50005)}, {"rpi.throttled": 0.0}],
                                0.0, 1.0)
    # 0x4 would be NVML's "sw_power_cap"; on a Pi it is "throttled" (the since-boot bits are not this window's)
    assert figures["throttle_reasons"] == ["throttled", "under_voltage"]


def test_pi4_has_throttling_but_no_pmic(tmp_path):
    fake = _fake_vcgencmd(tmp_path, {"pmic_read_adc": (0, PI4_NO_PMIC), "get_throttled": (0, "throttled=0x0\n")})
    sensor = VcgencmdSensor(fake, period_budget_s=0.05)
    availability = sensor.probe()
    assert availability.available and "no PMIC ADC" in availability.reason
    assert [m.name for m in sensor.metrics()] == ["rpi.throttled"]


def test_not_permitted_says_how_to_fix(tmp_path):
    fake = _fake_vcgencmd(tmp_path, {"pmic_read_adc": (255, NOT_PERMITTED), "get_throttled": (255, NOT_PERMITTED)})
    availability = VcgencmdSensor(fake).probe()
    assert not availability.available
    assert "cannot reach the firmware (VCHI initialization failed)" in availability.reason
    assert "video group" in availability.fix


def test_missing_vcgencmd(tmp_path):
    availability = VcgencmdSensor(str(tmp_path / "no-such-vcgencmd")).probe()
    assert not availability.available and "not found" in availability.reason


def test_registry_lists_it_and_the_pi5_profile_names_it(tmp_path):
    from edgeprof.hardware.devices import get_profile

    names = [s.name for s in candidate_sensors(vcgencmd=str(tmp_path / "none"))]
    assert "vcgencmd" in names
    assert "vcgencmd" in get_profile("raspberry-pi-5").data["sensors"]
